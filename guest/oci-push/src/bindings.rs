//! Bindings generated from the `stellaops:doctor` contract in `wit/`.
//!
//! Every `wasi:*` interface is taken from the `wasi` crate instead of being generated again, so
//! the adapter shares one set of WASI types with any library that uses that crate; only
//! `wasi:config/store` (which the `wasi` crate does not cover) and our own interfaces are
//! generated here.

wit_bindgen::generate!({
    world: "doctor-check",
    // Relative to this crate's `Cargo.toml`.
    path: "../../wit",
    // `::wasi` because the generated `wasi` module (for `wasi:config`) shadows the crate name.
    with: {
        "wasi:cli/environment@0.2.12": ::wasi::cli::environment,
        "wasi:cli/exit@0.2.12": ::wasi::cli::exit,
        "wasi:cli/stdin@0.2.12": ::wasi::cli::stdin,
        "wasi:cli/stdout@0.2.12": ::wasi::cli::stdout,
        "wasi:cli/stderr@0.2.12": ::wasi::cli::stderr,
        "wasi:cli/terminal-input@0.2.12": ::wasi::cli::terminal_input,
        "wasi:cli/terminal-output@0.2.12": ::wasi::cli::terminal_output,
        "wasi:cli/terminal-stdin@0.2.12": ::wasi::cli::terminal_stdin,
        "wasi:cli/terminal-stdout@0.2.12": ::wasi::cli::terminal_stdout,
        "wasi:cli/terminal-stderr@0.2.12": ::wasi::cli::terminal_stderr,
        "wasi:clocks/monotonic-clock@0.2.12": ::wasi::clocks::monotonic_clock,
        "wasi:clocks/wall-clock@0.2.12": ::wasi::clocks::wall_clock,
        "wasi:filesystem/types@0.2.12": ::wasi::filesystem::types,
        "wasi:filesystem/preopens@0.2.12": ::wasi::filesystem::preopens,
        "wasi:http/types@0.2.12": ::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": ::wasi::http::outgoing_handler,
        "wasi:io/error@0.2.12": ::wasi::io::error,
        "wasi:io/poll@0.2.12": ::wasi::io::poll,
        "wasi:io/streams@0.2.12": ::wasi::io::streams,
        "wasi:random/random@0.2.12": ::wasi::random::random,
        "wasi:config/store@0.2.0-rc.1": generate,
    },
});
