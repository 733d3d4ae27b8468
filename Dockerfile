# syntax=docker/dockerfile:1
# One image, both binaries: `ferrocket` (name server, broker, admin, bench) and
# `ferrocket-operator`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY broker/Cargo.toml broker/Cargo.toml
COPY operator/Cargo.toml operator/Cargo.toml
COPY e2e/interop/Cargo.toml e2e/interop/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
RUN mkdir -p broker/src/bin broker/benches operator/src e2e/interop/src testkit/src \
 && for d in broker operator e2e/interop testkit; do echo 'fn main() {}' > $d/src/main.rs; : > $d/src/lib.rs; done \
 && echo 'fn main() {}' > broker/benches/store.rs && echo 'fn main() {}' > broker/src/bin/ferrocket.rs \
 && cargo fetch --locked
COPY broker broker
COPY operator operator
COPY e2e/interop e2e/interop
COPY testkit testkit
RUN cargo build --release --locked -p ferrocket -p ferrocket-operator \
 && install -D -m 0755 target/release/ferrocket /out/ferrocket \
 && install -D -m 0755 target/release/ferrocket-operator /out/ferrocket-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The broker store lives on the PVC mounted at /data; the root filesystem stays read-only.
USER 10001:10001
EXPOSE 9876 10909 10911 10912 9100 8080
ENTRYPOINT []
CMD ["ferrocket", "dev", "--data-dir", "/data/ferrocket"]
