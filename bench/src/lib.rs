//! Shared by the benchmark binaries of this workspace member: the redis-server harness of the
//! tests (the `test-support` member), the benchmark support, the apps under test, and what the
//! interleaved runners have in common.

pub use test_support::redis_server;

pub mod support;

pub mod apps;
pub mod memory;
pub mod placement;
pub mod resp;
pub mod topology;
pub mod wrk;

/// `items` rotated left by `round`: every item goes first in turn, so that no library always
/// runs right after the same neighbour or at the same point of a round.
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let n = items.len().max(1);
    items
        .iter()
        .cycle()
        .skip(round % n)
        .take(items.len())
        .copied()
        .collect()
}

/// The value of `--name N` among the arguments, if given (the first, if given twice).
pub fn arg_value<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = arg_values(name).into_iter().next()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse {value:?}")),
    )
}

/// The values of every `--name N` among the arguments, in order.
pub fn arg_values(name: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotation_puts_each_first_in_turn() {
        let libs = ["a", "b", "c"];
        assert_eq!(super::rotated(&libs, 0), ["a", "b", "c"]);
        assert_eq!(super::rotated(&libs, 1), ["b", "c", "a"]);
        assert_eq!(super::rotated(&libs, 5), ["c", "a", "b"]);
    }
}
