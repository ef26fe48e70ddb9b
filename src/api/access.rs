//! The route table: every route with the access it needs, registered in one
//! place ([`Routes::add`]), so the scope a call needs is read from the route
//! it matched, not from its path's text.
//!
//! A method a route does not serve (answered 405) needs the least scope of
//! that route's methods; a path no route matches needs `read` under `/v1`
//! and nothing elsewhere (answered 404 either way).

use std::collections::HashMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};

use crate::api::auth::{Access, Scope};
use crate::api::state::ApiState;

/// The access of every (method, route) registered.
#[derive(Debug, Default)]
pub struct RouteAccess {
    /// Per route template, the access of each method it serves.
    by_route: HashMap<&'static str, Vec<(Method, Access)>>,
    /// Per route, the least access of its methods (for other methods).
    least: HashMap<&'static str, Access>,
}

fn rank(a: Access) -> u8 {
    match a {
        Access::Open => 0,
        Access::Metrics | Access::Info => 1,
        Access::Scope(Scope::Read) => 2,
        Access::Scope(Scope::Submit) => 3,
        Access::Scope(Scope::Admin) => 4,
    }
}

impl RouteAccess {
    /// The access a call needs: `route` is the template it matched
    /// (axum's `MatchedPath`), `path` the request's path.
    pub fn of(&self, method: &Method, route: Option<&str>, path: &str) -> Access {
        match route {
            // Looked up by the template, not scanned: this runs per request.
            Some(r) => self
                .by_route
                .get(r)
                .and_then(|ms| ms.iter().find(|(m, _)| m == method))
                .map(|(_, a)| *a)
                .or_else(|| self.least.get(r).copied())
                .unwrap_or(Access::Open),
            None if path == "/v1" || path.starts_with("/v1/") => Access::Scope(Scope::Read),
            None => Access::Open,
        }
    }

    /// Every route template registered: with `unmatched`, every value the
    /// `route` label of the request metrics can take.
    pub fn templates(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_route.keys().copied()
    }

    /// Every (method, route template) registered.
    pub fn operations(&self) -> Vec<(Method, &'static str)> {
        self.by_route
            .iter()
            .flat_map(|(r, ms)| ms.iter().map(|(m, _)| (m.clone(), *r)))
            .collect()
    }
}

/// The router under construction and the access of each route in it.
pub struct Routes {
    pub router: axum::Router<ApiState>,
    pub access: RouteAccess,
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: axum::Router::new(),
            access: RouteAccess::default(),
        }
    }

    /// Serves `method path` with `handler`, needing `access`.
    pub fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.access
            .by_route
            .entry(path)
            .or_default()
            .push((method, access));
        let least = self.access.least.entry(path).or_insert(access);
        if rank(access) < rank(*least) {
            *least = access;
        }
        self
    }

    /// Adds another table's routes (and their layers) to this one.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        for (path, methods) in other.access.by_route {
            self.access
                .by_route
                .entry(path)
                .or_default()
                .extend(methods);
        }
        self.access.least.extend(other.access.least);
        self
    }

    /// Wraps the routes so far in `f` (e.g. a route layer).
    pub fn map(
        mut self,
        f: impl FnOnce(axum::Router<ApiState>) -> axum::Router<ApiState>,
    ) -> Routes {
        self.router = f(self.router);
        self
    }

    /// The router and the table, shared with the guard.
    pub fn split(self) -> (axum::Router<ApiState>, Arc<RouteAccess>) {
        (self.router, Arc::new(self.access))
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}
