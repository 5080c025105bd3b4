# The kfp-apiserver image: a release build on Debian, run from distroless as non-root (uid
# 65532, as apiservice/deploy's Deployment expects) with a read-only root filesystem.
#   docker build -t ghcr.io/kubeflow/kfp-apiserver:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kfp-apiserver \
 && install -D -m 0755 target/release/kfp-apiserver /out/kfp-apiserver

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kfp-apiserver /usr/local/bin/kfp-apiserver
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/kfp-apiserver"]
CMD ["serve", "--help"]
