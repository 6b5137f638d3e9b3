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

# Load test of feed-server against the constant-response floor (docs/BENCHMARKS.md).
# `just bench` is the full 5M x 200 run; `just bench --smoke` the quick check.
bench *args:
    bash benchmark/run.sh {{args}}

# Fuzz the public API from docs/openapi.json against a server already
# running at `url` (schemathesis, from PyPI: `pip install schemathesis`).
fuzz url="http://127.0.0.1:8080":
    st --config-file config/schemathesis.toml run docs/openapi.json --url {{url}} --checks all
