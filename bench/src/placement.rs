//! Which CPUs the server runs on, and which the load generator and Redis.
//!
//! Apart when the machine has two or more: the server (this process) on every CPU but the
//! first, wrk and redis-server on the first. Sharing them, wrk's own CPU per request (about
//! what the server without a layer spends) is paid out of the server's, which flattens every
//! ratio between apps and adds the scheduler's noise; in production the clients and Redis are
//! other machines. Without `taskset` (util-linux) or on one CPU, everything shares.

use std::process::Command;

/// Where the server, the load generator and Redis run.
#[derive(Clone)]
pub struct Placement {
    /// `taskset` CPU lists: (server, wrk and Redis); `None` when not pinned.
    pub cpus: Option<(String, String)>,
    /// Worker threads of the server's runtime: one per CPU it has.
    pub workers: usize,
}

impl Placement {
    pub fn detect() -> Self {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        let taskset = Command::new("taskset").arg("-V").output();
        if n < 2 || !taskset.is_ok_and(|o| o.status.success()) {
            eprintln!("not pinned: the server, wrk and Redis share every CPU");
            return Self {
                cpus: None,
                workers: n,
            };
        }
        let server = if n == 2 {
            "1".into()
        } else {
            format!("1-{}", n - 1)
        };
        Self {
            cpus: Some((server, "0".into())),
            workers: n - 1,
        }
    }

    /// Pins every thread of process `pid` to `cpus`.
    pub fn pin(pid: impl std::fmt::Display, cpus: &str) {
        let pid = pid.to_string();
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("taskset");
        assert!(status.success(), "taskset -a -p -c {cpus} {pid} failed");
    }

    /// Pins this process where the server runs.
    pub fn pin_self(&self) {
        if let Some((server, _)) = &self.cpus {
            Self::pin(std::process::id(), server);
        }
    }

    /// Pins process `pid` (a redis-server) where the load generator runs.
    pub fn pin_load(&self, pid: impl std::fmt::Display) {
        if let Some((_, load)) = &self.cpus {
            Self::pin(pid, load);
        }
    }

    /// A command that runs `program` where the load generator runs.
    pub fn load_command(&self, program: &str) -> Command {
        match &self.cpus {
            Some((_, load)) => {
                let mut c = Command::new("taskset");
                c.args(["-c", load, program]);
                c
            }
            None => Command::new(program),
        }
    }

    pub fn describe(&self) -> String {
        match &self.cpus {
            Some((server, load)) => format!(
                "the server on CPU {server} ({} worker thread{}), wrk and Redis on CPU {load}",
                self.workers,
                if self.workers == 1 { "" } else { "s" }
            ),
            None => format!(
                "the server ({} worker threads), wrk and Redis share the machine's CPUs",
                self.workers
            ),
        }
    }
}
