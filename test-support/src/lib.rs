//! What the tests of `tower-redis-session` (`tests/common`) and the benchmark member (`bench/`)
//! share, as a crate of the workspace rather than files one package includes from another:
//! a throwaway redis-server, and the deployments (Cluster, Sentinel, TLS) built of them.

pub mod redis_server;
pub mod topology;
