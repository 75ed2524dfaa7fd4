//! `candle_model_server`: serves the models of `models.config` (or `--model_config_file`,
//! or `--model_name`/`--model_base_path`) over TF Serving's gRPC and REST APIs.
//! Only the flags, logging and the runtime are set up here; everything the server does lives
//! in the library (`server::Server`).

use std::process::ExitCode;

use clap::Parser;

use candle_serving::config::ServerArgs;
use candle_serving::server::{init_logging, Server, ServerOptions};

/// mimalloc instead of glibc's malloc. A request allocates and frees dozens of small buffers
/// on several threads (transport, queue, inference pool): under load glibc's malloc and free
/// took about a tenth of the tagger server's samples. And a forward pass allocates megabytes
/// of activations, which glibc hands back to the kernel and faults in again, zeroed, on the
/// next call; mimalloc keeps them for reuse. (Figures in BENCHMARKS.md.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let options = ServerOptions::from_args(&args)?;
        let server = Server::start(options).await?;
        server.run_until_signal().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("candle_model_server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
