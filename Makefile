# The one test command (README, .ci/run): every test of the workspace, from a clean clone.
.PHONY: test lint bench
test:
	cargo test --workspace --locked

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

bench:
	cargo bench -p ferrocket --bench store
