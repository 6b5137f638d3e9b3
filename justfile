# Fast Feed recipes. `just --list` shows them all.

config := "config/default.toml"

# Run the server (release build) with the default configuration.
run config=config:
    cargo run --release -p feed-server -- --config {{config}}

# The whole test suite.
test:
    cargo test --workspace

# Formatting check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Criterion micro-benchmarks of the hot path.
micro:
    cargo bench -p feed-bench

# What CI runs.
ci:
    bash .ci/run
