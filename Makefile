# The one test command (README, .ci/run): every test of the workspace, from a clean clone,
# then the C++ client (librocketmq through the `rocketmq` wheel; skips with one line where
# pip cannot install it), the Node.js ali-ons client (skips with one line where npm cannot
# install it), then the kind suite (which skips with one line where
# docker/kind/kubectl/helm are missing).
.PHONY: test lint bench kind
test:
	cargo test --workspace --locked
	bash e2e/cpp/run.sh
	bash e2e/node/run.sh
	bash e2e/kind/run.sh

kind:
	bash e2e/kind/run.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

bench:
	cargo bench -p ferrocket --bench store
