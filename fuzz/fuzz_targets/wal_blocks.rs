#![no_main]

#[global_allocator]
static ALLOCATOR: drctl::fuzz::BoundedAlloc = drctl::fuzz::BoundedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drctl::fuzz::run("wal_blocks", data));
