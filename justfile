# Cachew-rs recipes. Get `just` with `cargo install just` or `pip install rust-just`.

# The main job: the built-in dataset on a local cluster, in the live dashboard.
demo *ARGS:
    cargo run --release -p cachew-tui -- demo {{ARGS}}

# The same cluster headless, printing each epoch (attach with `cachew-tui --dispatcher ...`).
up *ARGS:
    cargo run --release -p cachew-fixtures --bin cachew-scenario -- up {{ARGS}}

# Every test (the README's test command): unit, property, end-to-end and scenario tests.
test:
    cargo test --workspace

# Every fuzz test, SCALE times as many cases as CI runs, with a new seed (README, Fuzzing).
fuzz SCALE="20":
    CACHEW_FUZZ_SCALE={{SCALE}} CACHEW_FUZZ_SEED=random cargo test -p cachew-fuzzing \
        -p cachew-pipeline --test fuzz --test fuzz_jpeg -p cachew-store --test fuzz_store \
        -p cachew-proto --test fuzz_wire -p cachew-client --test fuzz_cursor \
        -p cachew-dispatcher --test fuzz -p cachew-worker --test fuzz_worker \
        -p cachew-cluster --test fuzz_control

# Every fault scenario in fixtures/scenarios, one verdict line each.
test-all:
    cargo run --release -p cachew-fixtures --bin cachew-scenario -- all

# Some scenario files: just scenario fixtures/scenarios/failover.toml
scenario +FILES:
    cargo run --release -p cachew-fixtures --bin cachew-scenario -- run {{FILES}}

# One job through seeded random faults for MINUTES, every epoch verified: just soak 30 --seed 7
soak MINUTES="5" *ARGS:
    cargo run --release -p cachew-fixtures --bin cachew-scenario -- soak --minutes {{MINUTES}} {{ARGS}}

# Benchmarks; results and method go into BENCHMARKS.md.
bench:
    cargo bench --workspace

# The image cachew-rs:dev from this host's release (or: just image debug) binaries; README, Deploy.
image PROFILE="release":
    cargo build --workspace --bins {{ if PROFILE == "release" { "--release" } else { "" } }}
    deploy/image/build-image.sh --profile {{PROFILE}}

# The Compose deployment through a worker kill and a network cut, checked (root, Docker; as CI).
deploy-test:
    cargo test --workspace --no-run
    cargo test --workspace --test deploy -- --ignored --nocapture --test-threads 1

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
