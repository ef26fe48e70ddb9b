//! The node-file cases written as a table: a file and an environment map in, the node type,
//! pools and warnings it loads with (or the error it fails with) out; and the key table
//! checked against a file that sets every key.

use toml::{Table, Value};

use super::keys::{self, Kind};
use super::model::{
    ApiConfig, Config, DrillManager, ExecutorConfig, HandlersConfig, LimitsConfig, NodeType,
};
use super::parse::parse_table;
use super::testutil::{db, load, pools, top, Pools, DEFAULT_POOL, FILE};
use std::path::Path;

enum Expect {
    /// Loads as this node type with exactly these pools; each listed text occurs in its
    /// own warning and there are no others; `check` holds.
    Ok {
        node_type: NodeType,
        pools: Pools,
        warnings: &'static [&'static str],
        check: fn(&Config) -> bool,
    },
    /// Fails with a message containing every listed text.
    Err(&'static [&'static str]),
}
use Expect::{Err as Fails, Ok as Loads};

fn any(_: &Config) -> bool {
    true
}

struct Case {
    name: &'static str,
    text: &'static str,
    env: &'static [(&'static str, &'static str)],
    expect: Expect,
}

const ORCHESTRATOR_WARNING: &str = "key `mode` is deprecated: replace mode = \"orchestrator\" \
    with enable_client = true and enable_executor = true";

const CASES: &[Case] = &[
    Case {
        name: "minimal file: hybrid with every default",
        text: concat!(top!(), db!()),
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| {
                c.write_region == "us-east"
                    && c.node_id.ends_with("-us-east")
                    && c.api == ApiConfig::default()
                    && c.api.public_url == "http://127.0.0.1:4000"
                    && c.database.max_connections == 16
                    && c.executor == ExecutorConfig::default()
                    && c.limits == LimitsConfig::default()
                    && c.handlers == HandlersConfig::default()
                    && c.regions_file.is_none()
                    && c.source.as_deref() == Some(Path::new(FILE))
                    && c.roles() == ["client", "executor"]
            },
        },
    },
    Case {
        name: "the DESIGN.md example",
        text: r#"
node_id = "us-east-1"
region = "us-east"
write_region = "us-west"
enable_client = true
enable_executor = true
regions_file = "regions/local.toml"
[api]
listen = "127.0.0.1:4001"
public_url = "https://node.example:4001/"
[database]
url = "postgresql://db/swf"
[worker_pools.default]
size = 10
queue = "default"
[worker_pools.gpu]
size = 2
queue = "gpu_tasks"
"#,
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks")],
            warnings: &[],
            check: |c| {
                c.node_id == "us-east-1"
                    && c.write_region == "us-west"
                    && c.regions_file.as_deref() == Some(Path::new("deploy/regions/local.toml"))
                    && c.api.listen.port() == 4001
                    && c.api.public_url == "https://node.example:4001"
            },
        },
    },
    Case {
        name: "edge node",
        text: concat!("enable_executor = false\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &[], check: |c| c.roles() == ["client"] },
    },
    Case {
        name: "worker node",
        text: concat!("enable_client = false\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &[], check: |c| c.roles() == ["executor"] },
    },
    Case {
        name: "the lineage cache bounded in bytes and entries",
        text: concat!(top!(), db!(), "[routing]\ncache_max_bytes = 1048576\ncache_entries = 50\n"),
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| c.routing.cache_max_bytes == 1 << 20 && c.routing.cache_entries == 50,
        },
    },
    Case {
        name: "cache bytes default to 64 MiB",
        text: concat!(top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: |c| c.routing.cache_max_bytes == 64 << 20 },
    },
    Case {
        name: "cache bytes from the environment",
        text: concat!(top!(), db!()),
        env: &[("SWF_ROUTING__CACHE_MAX_BYTES", "0")],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: |c| c.routing.cache_max_bytes == 0 },
    },
    Case {
        name: "negative cache bytes",
        text: concat!(top!(), db!(), "[routing]\ncache_max_bytes = -1\n"),
        env: &[],
        expect: Fails(&["key `routing.cache_max_bytes`: must be between 0 and 1099511627776 (got -1)"]),
    },
    Case {
        name: "both roles off",
        text: concat!("enable_client = false\nenable_executor = false\n", top!(), db!()),
        env: &[],
        expect: Fails(&[
            "config file deploy/x.toml",
            "node is disabled: enable_client and enable_executor are both false (a node must have at least one role)",
        ]),
    },
    Case {
        name: "edge node with pools: ignored, with a warning",
        text: concat!("enable_executor = false\n", top!(), db!(), "[worker_pools.gpu]\nsize = 2\n"),
        env: &[],
        expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["ignored on an edge node"], check: any },
    },
    Case {
        name: "empty pool table on an executor: warning",
        text: concat!(top!(), db!(), "[worker_pools]\n"),
        env: &[],
        expect: Loads { node_type: NodeType::Hybrid, pools: &[], warnings: &["will run no tasks"], check: any },
    },
    Case {
        name: "legacy mode orchestrator",
        text: concat!("mode = \"orchestrator\"\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[ORCHESTRATOR_WARNING], check: any },
    },
    Case {
        name: "legacy mode with an explicit role key: the key wins",
        text: concat!("mode = \"orchestrator\"\nenable_executor = false\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &[ORCHESTRATOR_WARNING], check: any },
    },
    Case {
        name: "legacy mode client",
        text: concat!("mode = \"client\"\n", top!(), db!()),
        env: &[],
        expect: Loads {
            node_type: NodeType::Edge,
            pools: &[],
            warnings: &["replace mode = \"client\" with enable_client = true and enable_executor = false"],
            check: any,
        },
    },
    Case {
        name: "legacy mode edge",
        text: concat!("mode = \"edge\"\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["key `mode` is deprecated"], check: any },
    },
    Case {
        name: "legacy mode worker",
        text: concat!("mode = \"worker\"\n", top!(), db!()),
        env: &[],
        expect: Loads {
            node_type: NodeType::Worker,
            pools: DEFAULT_POOL,
            warnings: &["replace mode = \"worker\" with enable_client = false and enable_executor = true"],
            check: any,
        },
    },
    Case {
        name: "legacy mode executor",
        text: concat!("mode = \"executor\"\n", top!(), db!()),
        env: &[],
        expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &["key `mode` is deprecated"], check: any },
    },
    Case {
        name: "bad mode value",
        text: concat!("mode = \"boss\"\n", top!(), db!()),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `mode`: must be one of", "\"orchestrator\"", "(got \"boss\")"]),
    },
    Case {
        name: "mode of the wrong type",
        text: concat!("mode = 3\n", top!(), db!()),
        env: &[],
        expect: Fails(&["key `mode`", "(got 3)"]),
    },
    Case {
        name: "legacy array of pools",
        text: concat!(
            top!(),
            db!(),
            "[[worker_pools]]\nname = \"default\"\nsize = 10\nqueue = \"default\"\n",
            "[[worker_pools]]\nname = \"gpu\"\nsize = 2\nqueue = \"gpu_tasks\"\n",
            "[[worker_pools]]\nname = \"io\"\n",
        ),
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks"), ("io", 10, "io")],
            warnings: &["array of tables"],
            check: any,
        },
    },
    Case {
        name: "legacy pool without a name",
        text: concat!(top!(), db!(), "[[worker_pools]]\nsize = 2\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `worker_pools[0].name` is required"]),
    },
    Case {
        name: "legacy pools with one name twice",
        text: concat!(top!(), db!(), "[[worker_pools]]\nname = \"a\"\n[[worker_pools]]\nname = \"a\"\n"),
        env: &[],
        expect: Fails(&["key `worker_pools[1].name`: duplicate pool \"a\""]),
    },
    Case {
        name: "legacy pool with an unknown key",
        text: concat!(top!(), db!(), "[[worker_pools]]\nname = \"a\"\nconcurrency = 2\n"),
        env: &[],
        expect: Fails(&["unknown key `worker_pools[0].concurrency`"]),
    },
    Case {
        name: "unknown top-level key",
        text: concat!("colour = \"blue\"\n", top!(), db!()),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: unknown key `colour`"]),
    },
    Case {
        name: "unknown nested key",
        text: concat!(top!(), db!(), "[api]\nlistn = \"127.0.0.1:1\"\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: unknown key `api.listn`", "`listen`"]),
    },
    Case {
        name: "unknown key in a pool",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nsise = 2\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: unknown key `worker_pools.gpu.sise`"]),
    },
    Case {
        name: "missing region",
        text: db!(),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `region` is required"]),
    },
    Case {
        name: "missing database table",
        text: top!(),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `database.url` is required"]),
    },
    Case {
        name: "database table without url",
        text: concat!(top!(), "[database]\nmax_connections = 4\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `database.url` is required"]),
    },
    Case {
        name: "database url of another scheme (password not echoed)",
        text: concat!(top!(), "[database]\nurl = \"mysql://swf:secret@db/swf\"\n"),
        env: &[],
        expect: Fails(&["key `database.url`: must start with postgres:// or postgresql://", "swf:***@db"]),
    },
    Case {
        name: "bad listen address",
        text: concat!(top!(), db!(), "[api]\nlisten = \"localhost\"\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `api.listen`: must be an address", "\"localhost\""]),
    },
    Case {
        name: "listen on all interfaces without public_url: warning",
        text: concat!(top!(), db!(), "[api]\nlisten = \"0.0.0.0:4000\"\n"),
        env: &[],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &["peers cannot reach"], check: any },
    },
    Case {
        name: "public_url not http",
        text: concat!(top!(), db!(), "[api]\npublic_url = \"ftp://x\"\n"),
        env: &[],
        expect: Fails(&["key `api.public_url`: must be an http:// or https:// URL"]),
    },
    Case {
        name: "pool size 0",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 0\n"),
        env: &[],
        expect: Fails(&["config file deploy/x.toml: key `worker_pools.gpu.size`: must be between 1 and 1024 (got 0)"]),
    },
    Case {
        name: "pool size too big",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 1025\n"),
        env: &[],
        expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got 1025)"]),
    },
    Case {
        name: "pool size negative",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = -1\n"),
        env: &[],
        expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got -1)"]),
    },
    Case {
        name: "bad pool name",
        text: concat!(top!(), db!(), "[worker_pools.\"gpu pool\"]\nsize = 1\n"),
        env: &[],
        expect: Fails(&["key `worker_pools.gpu pool`: pool name must be 1 to 64 characters"]),
    },
    Case {
        name: "bad queue name",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nqueue = \"gpu/tasks\"\n"),
        env: &[],
        expect: Fails(&["key `worker_pools.gpu.queue`: queue name must be"]),
    },
    Case {
        name: "bad region name",
        text: concat!("region = \"us east\"\n", db!()),
        env: &[],
        expect: Fails(&["key `region`: region must be 1 to 64 characters"]),
    },
    Case {
        name: "bad write_region name",
        text: concat!("write_region = \"\"\n", top!(), db!()),
        env: &[],
        expect: Fails(&["key `write_region`"]),
    },
    Case {
        name: "region of the wrong type",
        text: concat!("region = 5\n", db!()),
        env: &[],
        expect: Fails(&["key `region`: invalid type: integer `5`"]),
    },
    Case {
        name: "max_connections out of range",
        text: concat!(top!(), "[database]\nurl = \"postgres://db\"\nmax_connections = 0\n"),
        env: &[],
        expect: Fails(&["key `database.max_connections`: must be between 1 and 1000 (got 0)"]),
    },
    Case {
        name: "http and command handlers",
        text: concat!(
            top!(),
            db!(),
            "[handlers.http.score]\nurl = \"https://scorer.internal/v1/score\"\nsecret = \"s\"\n",
            "[handlers.command.resize]\nprogram = \"/usr/local/bin/resize\"\nargs = [\"--fast\"]\n",
            "timeout_ms = 5000\nenv = [\"MODE=gpu\"]\n"
        ),
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| {
                let h = &c.handlers.http["score"];
                let r = &c.handlers.command["resize"];
                h.url == "https://scorer.internal/v1/score"
                    && h.timeout_ms == 30_000
                    && h.secret.as_deref() == Some("s")
                    && r.program == "/usr/local/bin/resize"
                    && r.args == ["--fast"]
                    && r.timeout_ms == 5000
                    && r.env == [("MODE".to_string(), "gpu".to_string())]
            },
        },
    },
    Case {
        name: "an http handler without a usable url",
        text: concat!(top!(), db!(), "[handlers.http.score]\nurl = \"ftp://x\"\n"),
        env: &[],
        expect: Fails(&["key `handlers.http.score.url`: must be an http:// or https:// URL"]),
    },
    Case {
        name: "a command handler without a program",
        text: concat!(top!(), db!(), "[handlers.command.resize]\nargs = [\"x\"]\n"),
        env: &[],
        expect: Fails(&["key `handlers.command.resize.program`: is required"]),
    },
    Case {
        name: "a command handler env entry that is not KEY=VALUE",
        text: concat!(top!(), db!(), "[handlers.command.resize]\nprogram = \"p\"\nenv = [\"MODE\"]\n"),
        env: &[],
        expect: Fails(&["key `handlers.command.resize.env[0]`: must be KEY=VALUE"]),
    },
    Case {
        name: "ms value 0",
        text: concat!(top!(), db!(), "[executor]\npoll_interval_ms = 0\n"),
        env: &[],
        expect: Fails(&["key `executor.poll_interval_ms`: must be between 1 and 86400000 (got 0)"]),
    },
    Case {
        name: "ms value over a day",
        text: concat!(top!(), db!(), "[executor]\nshutdown_grace_ms = 86400001\n"),
        env: &[],
        expect: Fails(&["key `executor.shutdown_grace_ms`"]),
    },
    Case {
        name: "claim_batch too big",
        text: concat!(top!(), db!(), "[executor]\nclaim_batch = 1001\n"),
        env: &[],
        expect: Fails(&["key `executor.claim_batch`: must be between 1 and 1000"]),
    },
    Case {
        name: "heartbeat not shorter than the lease",
        text: concat!(top!(), db!(), "[executor]\nheartbeat_interval_ms = 15000\n"),
        env: &[],
        expect: Fails(&["key `executor.heartbeat_interval_ms`: must be less than executor.lease_ms"]),
    },
    Case {
        name: "limit 0",
        text: concat!(top!(), db!(), "[limits]\nmax_steps = 0\n"),
        env: &[],
        expect: Fails(&["key `limits.max_steps`: must be at least 1 (got 0)"]),
    },
    Case {
        name: "empty handler allow entry",
        text: concat!(top!(), db!(), "[handlers]\nshell_allow = [\"echo\", \"\"]\n"),
        env: &[],
        expect: Fails(&["key `handlers.shell_allow[1]`: must not be empty"]),
    },
    Case {
        name: "invalid TOML",
        text: "region = \"us-east\"\nnode_id = \n",
        env: &[],
        expect: Fails(&["config file deploy/x.toml: invalid TOML at line 2 column 11: "]),
    },
    Case {
        name: "env: SWF_API__LISTEN",
        text: concat!(top!(), db!()),
        env: &[("SWF_API__LISTEN", "127.0.0.1:5000")],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| c.api.listen.port() == 5000 && c.api.public_url == "http://127.0.0.1:5000",
        },
    },
    Case {
        name: "env: a pool override creates the pool table",
        text: concat!(top!(), db!()),
        env: &[("SWF_WORKER_POOLS__GPU__SIZE", "4")],
        expect: Loads { node_type: NodeType::Hybrid, pools: &[("gpu", 4, "gpu")], warnings: &[], check: any },
    },
    Case {
        name: "env: a pool override next to the file's pools",
        text: concat!(top!(), db!(), "[worker_pools.default]\n"),
        env: &[("SWF_WORKER_POOLS__GPU__QUEUE", "gpu_tasks"), ("SWF_WORKER_POOLS__DEFAULT__SIZE", "3")],
        expect: Loads { node_type: NodeType::Hybrid, pools: &[("default", 3, "default"), ("gpu", 10, "gpu_tasks")], warnings: &[], check: any },
    },
    Case {
        name: "env: SWF_ENABLE_EXECUTOR=false turns hybrid into edge",
        text: concat!(top!(), db!(), "[worker_pools.gpu]\nsize = 2\n"),
        env: &[("SWF_ENABLE_EXECUTOR", "false")],
        expect: Loads { node_type: NodeType::Edge, pools: &[], warnings: &["ignored on an edge node"], check: any },
    },
    Case {
        name: "env: role keys beat a legacy mode",
        text: concat!("mode = \"orchestrator\"\n", top!(), db!()),
        env: &[("SWF_ENABLE_CLIENT", "FALSE")],
        expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &[ORCHESTRATOR_WARNING], check: any },
    },
    Case {
        name: "env: legacy SWF_MODE",
        text: concat!(top!(), db!()),
        env: &[("SWF_MODE", "worker")],
        expect: Loads { node_type: NodeType::Worker, pools: DEFAULT_POOL, warnings: &["key `mode` is deprecated"], check: any },
    },
    Case {
        name: "env: both roles off",
        text: concat!("enable_client = false\n", top!(), db!()),
        env: &[("SWF_ENABLE_EXECUTOR", "false")],
        expect: Fails(&["node is disabled"]),
    },
    Case {
        name: "env: unknown SWF_ variable",
        text: concat!(top!(), db!()),
        env: &[("SWF_API__LISTN", "127.0.0.1:1")],
        expect: Fails(&["config file deploy/x.toml: environment variable SWF_API__LISTN: unknown key `api.listn`"]),
    },
    Case {
        name: "env: unknown top-level SWF_ variable",
        text: concat!(top!(), db!()),
        env: &[("SWF_DATA_DIR", "/tmp")],
        expect: Fails(&["environment variable SWF_DATA_DIR: unknown key `data_dir`"]),
    },
    Case {
        name: "env: a table, not a key",
        text: concat!(top!(), db!()),
        env: &[("SWF_WORKER_POOLS__GPU", "4")],
        expect: Fails(&["environment variable SWF_WORKER_POOLS__GPU: `worker_pools.gpu` is a table"]),
    },
    Case {
        name: "env: variables of other commands are ignored",
        text: concat!(top!(), db!()),
        env: &[
            ("SWF_PG_BIN", "/usr/lib/postgresql/16/bin"),
            ("SWF_LOG", "debug"),
            ("SWF_API_URL", "http://x"),
            ("SWF_TEST_KEEP", "1"),
            ("SWF_TEST_ANYTHING", "1"),
            ("PATH", "/usr/bin"),
        ],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: any },
    },
    Case {
        name: "env: supplies a required key",
        text: top!(),
        env: &[("SWF_DATABASE__URL", "postgres://swf:secret@other/swf")],
        expect: Loads { node_type: NodeType::Hybrid, pools: DEFAULT_POOL, warnings: &[], check: |c| c.database.url.contains("@other/") },
    },
    Case {
        name: "env: strings are taken verbatim",
        text: concat!(top!(), db!()),
        env: &[("SWF_NODE_ID", "42"), ("SWF_HANDLERS__SHELL_ALLOW", "echo, ls"), ("SWF_HANDLERS__HTTP_ALLOW", "[\"https://a\"]")],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| c.node_id == "42" && c.handlers.shell_allow == ["echo", "ls"] && c.handlers.http_allow == ["https://a"],
        },
    },
    Case {
        name: "env: invalid value names the variable",
        text: concat!(top!(), db!()),
        env: &[("SWF_WORKER_POOLS__GPU__SIZE", "0")],
        expect: Fails(&["key `worker_pools.gpu.size`: must be between 1 and 1024 (got 0) (set by environment variable SWF_WORKER_POOLS__GPU__SIZE)"]),
    },
    Case {
        name: "env: integer expected",
        text: concat!(top!(), db!()),
        env: &[("SWF_EXECUTOR__LEASE_MS", "soon")],
        expect: Fails(&["environment variable SWF_EXECUTOR__LEASE_MS: key `executor.lease_ms`: expected an integer (got \"soon\")"]),
    },
    Case {
        name: "env: boolean expected",
        text: concat!(top!(), db!()),
        env: &[("SWF_ENABLE_CLIENT", "maybe")],
        expect: Fails(&["environment variable SWF_ENABLE_CLIENT: key `enable_client`: expected true or false"]),
    },
    Case {
        name: "drills through Patroni: each region's REST API, member names default to the region",
        text: concat!(
            top!(),
            db!(),
            "[drills]\nmanager = \"patroni\"\nkill_command = \"ssh db-$SWF_DRILL_REGION kill\"\n",
            "[drills.patroni.us-east]\nurl = \"http://10.0.0.5:8008\"\n",
            "[drills.patroni.eu-west]\nurl = \"https://u:secret@10.1.0.5:8008\"\nmember = \"pg-eu-1\"\n",
        ),
        env: &[],
        expect: Loads {
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
            warnings: &[],
            check: |c| {
                c.drills.manager == DrillManager::Patroni
                    && c.drills.patroni["us-east"].member == "us-east"
                    && c.drills.patroni["us-east"].url == "http://10.0.0.5:8008"
                    && c.drills.patroni["eu-west"].member == "pg-eu-1"
                    && c.drills.kill_command.is_some()
            },
        },
    },
    Case {
        name: "drills.manager must be known",
        text: concat!(top!(), db!(), "[drills]\nmanager = \"pacemaker\"\n"),
        env: &[],
        expect: Fails(&["drills.manager", "\"patroni\"", "pacemaker"]),
    },
    Case {
        name: "Patroni drills need the REST APIs",
        text: concat!(top!(), db!(), "[drills]\nmanager = \"patroni\"\n"),
        env: &[],
        expect: Fails(&["drills.manager", "[drills.patroni.<region>]"]),
    },
    Case {
        name: "Patroni promotes: no promote_command beside it",
        text: concat!(
            top!(),
            db!(),
            "[drills]\nmanager = \"patroni\"\npromote_command = \"x\"\n",
            "[drills.patroni.us-east]\nurl = \"http://10.0.0.5:8008\"\n",
        ),
        env: &[],
        expect: Fails(&["drills.promote_command", "cannot be combined"]),
    },
    Case {
        name: "Patroni REST APIs without the manager",
        text: concat!(
            top!(),
            db!(),
            "[drills.patroni.us-east]\nurl = \"http://10.0.0.5:8008\"\n",
        ),
        env: &[],
        expect: Fails(&["drills.patroni", "drills.manager = \"patroni\""]),
    },
    Case {
        name: "a Patroni REST API must be an http(s) URL, named without its password",
        text: concat!(
            top!(),
            db!(),
            "[drills]\nmanager = \"patroni\"\n",
            "[drills.patroni.us-east]\nurl = \"ftp://u:secret@10.0.0.5\"\n",
        ),
        env: &[],
        expect: Fails(&["drills.patroni.us-east.url", "http://"]),
    },
    Case {
        name: "a Patroni member needs its url",
        text: concat!(
            top!(),
            db!(),
            "[drills]\nmanager = \"patroni\"\n",
            "[drills.patroni.us-east]\nmember = \"pg-1\"\n",
        ),
        env: &[],
        expect: Fails(&["drills.patroni.us-east.url"]),
    },
    Case {
        name: "env: cannot nest under a value",
        text: concat!("api = 5\n", top!(), db!()),
        env: &[("SWF_API__LISTEN", "127.0.0.1:1")],
        expect: Fails(&["environment variable SWF_API__LISTEN: key `api` in the file is not a table"]),
    },
];

#[test]
fn load_cases() {
    for case in CASES {
        let name = case.name;
        let result = load(case.text, case.env);
        match (&case.expect, result) {
            (
                Loads {
                    node_type,
                    pools: want,
                    warnings,
                    check,
                },
                Ok(loaded),
            ) => {
                let c = &loaded.config;
                assert_eq!(c.node_type(), *node_type, "{name}");
                let want: Vec<_> = want
                    .iter()
                    .map(|(n, s, q)| (n.to_string(), *s, q.to_string()))
                    .collect();
                assert_eq!(pools(c), want, "{name}");
                assert_eq!(
                    loaded.warnings.len(),
                    warnings.len(),
                    "{name}: {:?}",
                    loaded.warnings
                );
                for (got, want) in loaded.warnings.iter().zip(warnings.iter()) {
                    assert!(got.contains(want), "{name}: warning {got:?} lacks {want:?}");
                }
                assert!(check(c), "{name}: check failed on {c:?}");
            }
            (Fails(parts), Err(e)) => {
                let msg = e.to_string();
                for part in *parts {
                    assert!(msg.contains(part), "{name}: error {msg:?} lacks {part:?}");
                }
                assert!(
                    !msg.contains("secret"),
                    "{name}: error leaks the password: {msg}"
                );
                assert!(!msg.contains('\n'), "{name}: error spans lines: {msg:?}");
            }
            (Loads { .. }, Err(e)) => panic!("{name}: expected to load, got error: {e}"),
            (Fails(_), Ok(l)) => panic!("{name}: expected an error, loaded {:?}", l.config),
        }
    }
}

/// Every key of a file that sets all of them is known to the env schema, and can be
/// overridden through its `SWF_` variable.
#[test]
fn schema_matches_structs() {
    let full = r#"
node_id = "n1"
region = "r1"
write_region = "r1"
enable_client = true
enable_executor = true
regions_file = "regions.toml"
[api]
listen = "127.0.0.1:4000"
public_url = "http://127.0.0.1:4000"
[database]
url = "postgres://db"
max_connections = 8
[worker_pools.p1]
size = 2
queue = "q1"
[executor]
heartbeat_interval_ms = 1000
poll_interval_ms = 1000
visibility_margin_ms = 1000
lease_ms = 9000
shutdown_grace_ms = 1000
claim_batch = 4
[limits]
max_body_bytes = 10
max_steps = 10
max_id_len = 10
max_goal_len = 10
max_json_depth = 10
[handlers]
shell_allow = ["echo"]
http_allow = ["https://x"]
"#;
    let loaded = load(full, &[]).expect("full file loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let table = parse_table(full, FILE).expect("parses");
    let mut leaves = Vec::new();
    collect_leaves(&table, &mut Vec::new(), &mut leaves);
    assert_eq!(leaves.len(), 25);
    for (path, value) in leaves {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let kind = keys::find(&parts).map(|k| k.kind);
        assert!(
            matches!(
                kind,
                Some(Kind::Str | Kind::Bool | Kind::Int | Kind::StrList)
            ),
            "{path:?} unknown to the key table"
        );
        // Feeding each value back through its variable gives the same config.
        let var = format!("SWF_{}", path.join("__").to_uppercase());
        let raw = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let again = load(full, &[(var.as_str(), raw.as_str())]).expect("override loads");
        assert_eq!(again.config, loaded.config, "{var}");
    }
}

fn collect_leaves(table: &Table, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    for (key, value) in table {
        at.push(key.clone());
        match value {
            Value::Table(t) => collect_leaves(t, at, out),
            v => out.push((at.clone(), v.clone())),
        }
        at.pop();
    }
}
