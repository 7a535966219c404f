# syntax=docker/dockerfile:1
# pgoutbox: a static, non-root image with the daemon and the demo producer.
#   docker build -t pgoutbox --build-arg VERSION=$(git describe --always) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgoutbox ./cmd/pgoutbox && \
    go build -trimpath -ldflags "-s -w" -o /out/pgoutbox-demo-producer ./deploy/demo-producer

# distroless/static: no shell, no libc, CA certificates and /tmp included; runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgoutbox /out/pgoutbox-demo-producer /usr/local/bin/
USER nonroot:nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/pgoutbox"]
CMD ["run", "--config", "/etc/pgoutbox/config.yaml"]
