//! The `tidings` binary: parses the command line and hands over to the library.

/// glibc's allocator showed up at about a tenth of the hot path's time (small, short-lived buffers freed on
/// other threads); mimalloc keeps per-thread free lists that make those cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tidings::cli::main()
}
