//! Fixed settings of the dev/test servers: the host and superuser, the
//! file names written into a data directory, the configuration every
//! cluster gets, and the poll interval and deadlines of starting and
//! stopping a server.

use std::time::Duration;

/// Interval between readiness / exit polls.
pub(super) const POLL: Duration = Duration::from_millis(50);
/// How long `start` waits for the server to accept connections.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long `stop` waits after the fast-shutdown signal before SIGKILL.
pub(super) const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long `kill` waits for the killed backends to disappear.
pub(super) const KILL_DEADLINE: Duration = Duration::from_secs(10);
pub(super) const LOG_TAIL_LINES: usize = 20;
pub(super) const SUPERUSER: &str = "postgres";
pub(super) const HOST: &str = "127.0.0.1";
pub(super) const CONF_FILE: &str = "swf.conf";
/// Included (if present) TLS settings written by [`super::install_server_tls`].
pub(super) const TLS_CONF_FILE: &str = "swf-tls.conf";
/// The CA a TLS-enabled server's replication connection verifies its upstream with.
pub(super) const TLS_CA_FILE: &str = "swf-ca.crt";

/// Settings written into `<data_dir>/swf.conf`, included from `postgresql.conf`. The port is
/// deliberately absent: it is passed with `-p` at start so a restart can move ports. `fsync` and
/// `synchronous_commit` keep their (safe) defaults.
pub(super) const SWF_CONF: &str = "\
# Written by singularity-workflow (pgserver). The port is passed at start time (-p).
# fsync and synchronous_commit deliberately keep their defaults (on).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_keep_size = '256MB'
max_connections = 200
shared_buffers = '256MB'
logging_collector = off
";

pub(super) const PG_HBA: &str = "\
# Written by singularity-workflow (pgserver): local development / test cluster, trust auth.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
";
