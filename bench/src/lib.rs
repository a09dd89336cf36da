//! Shared by the benchmark binaries and benches of this workspace member: the redis-server
//! harness of the tests, the benchmark support of the main crate, and the apps under test.

#[path = "../../tests/common/redis_server.rs"]
pub mod redis_server;
#[path = "../../benches/support/mod.rs"]
pub mod support;

pub mod apps;
