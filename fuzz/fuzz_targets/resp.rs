//! Arbitrary bytes as replies from Redis, through our own RESP2 reader: never a panic, the
//! reader's two passes (`skip` and `parse`) always of one mind, and no reply read that
//! redis-rs's parser would read otherwise or refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_redis_session::__fuzz::resp_reader(data);
});
