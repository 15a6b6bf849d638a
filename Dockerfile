# ToolOps server image: a Swift 6 builder, a slim Debian runtime with libhiredis and libssl.
#   docker build -t toolops .
#   docker run -p 8080:8080 toolops                       # demo tools, state in memory
#   docker run -e TOOLOPS_STATE_BACKEND=redis -e TOOLOPS_STATE_REDIS_URL=redis://redis:6379 toolops
FROM swift:6.3-bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhiredis-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not refetch them.
COPY Package.swift ./
RUN swift package resolve
# The manifest names every target (tests and benchmarks too), so the whole tree is copied.
COPY . .
RUN swift build -c release --product toolops --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/toolops" /out/toolops

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhiredis0.14 libssl3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home toolops
COPY --from=build /out/toolops /usr/local/bin/toolops
COPY examples/single-replica.json /etc/toolops/toolops.json
USER toolops
EXPOSE 8080
ENV TOOLOPS_SERVER_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fs http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/toolops", "serve"]
CMD ["--config", "/etc/toolops/toolops.json"]
