//! The allocator the server binary uses (mimalloc, see `src/bin/candle_model_server.rs`), so
//! that a benchmark running the library in its own process measures what the server runs.
//! Where the load generator shares that process (benches/load.rs, rest_vs_grpc.rs), it gets
//! the same allocator too.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
