# Cachew-rs recipes. Get `just` with `cargo install just` or `pip install rust-just`.

# The built-in dataset on a local cluster, in the live dashboard.
demo:
    cargo run --release -p cachew-tui -- demo

# Run every test (the README's test command).
test:
    cargo test --workspace

# Benchmarks; results and method go into BENCHMARKS.md.
bench:
    cargo bench --workspace

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
