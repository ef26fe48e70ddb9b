//! The handlers a node's config declares (`[handlers.http.<name>]`,
//! `[handlers.command.<name>]`), added to its registry.

use super::command::CommandHandler;
use super::http::HttpHandler;
use super::Registry;
use crate::config::HandlersConfig;

impl Registry {
    /// Registers the `http:<name>` and `command:<name>` handlers `cfg`
    /// declares (a node calls this with its config; nothing else of these
    /// kinds runs on it).
    pub fn register_configured(&mut self, cfg: &HandlersConfig) -> &mut Self {
        for (name, h) in &cfg.http {
            self.register(&format!("http:{name}"), HttpHandler::new(name, h));
        }
        for (name, c) in &cfg.command {
            self.register(&format!("command:{name}"), CommandHandler::new(name, c));
        }
        self
    }
}
