//! The `tidings` binary: parses the command line and hands over to the library.

/// The service allocates and frees many small buffers per request (HTTP heads, bodies, rows); jemalloc serves
/// them from per-thread caches where glibc's allocator spent a tenth of the CPU consolidating and unlinking.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tidings::cli::main()
}
