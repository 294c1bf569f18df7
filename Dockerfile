# syntax=docker/dockerfile:1
# One Dockerfile for the four services, built from the repository root (the Go workspace):
#   docker build --build-arg SERVICE=order-service -t orderflow/order-service .
# docker-compose.yml passes SERVICE for each. `make test` replays the build stages without
# Docker (e2e/imagebuild) and checks that the binary the last stage copies is static.
ARG SERVICE

# Every go.mod, go.sum, go.work and go.work.sum of the context, found rather than listed, so
# a module that joins go.work is in the dependency layer without anyone remembering it.
# This stage reruns on every change, but its output changes only with the module files.
FROM golang:1.26.8-bookworm AS modules
WORKDIR /src
COPY . .
RUN mkdir /modules \
 && find . -type f \( -name go.mod -o -name go.sum -o -name go.work -o -name go.work.sum \) -print0 \
  | tar --null -cf - -T - | tar -xf - -C /modules \
 && test -f /modules/go.work

FROM golang:1.26.8-bookworm AS build
ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=order-service|payment-service|notification-service|reconciliation-service" >&2; exit 1; }
WORKDIR /src
# The dependency layer: cached until a module file changes.
COPY --from=modules /modules/ ./
RUN go mod download
COPY . .
RUN test -f "$SERVICE/main.go" || { echo "SERVICE=$SERVICE is not a service of this workspace" >&2; exit 1; } \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/service "./$SERVICE"

FROM alpine:3.22
ARG SERVICE
LABEL org.opencontainers.image.title="orderflow $SERVICE"
RUN adduser -D -H -u 10001 orderflow
COPY --from=build /out/service /usr/local/bin/service
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/service"]
