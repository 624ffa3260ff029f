# nginx-kafka. `make run` starts a local broker and nginx with nginx/nginx.conf;
# `make test` runs every test; `make bench` (QUICK=1 for a short run) runs the benchmark.
# Each installs what it needs first.

CARGO   ?= cargo
PROFILE := release
OUT     := build

.PHONY: all deps build run stop test test-debian test-container image deb fuzz-smoke bench clean

all: build

deps:
	@scripts/deps.sh build

build: deps
	$(CARGO) build --$(PROFILE) --lib --bins
	@mkdir -p $(OUT)/sbin $(OUT)/modules $(OUT)/bin
	@nginx=$$(ls -t target/$(PROFILE)/build/nginx-sys-*/out/objs/nginx | head -n 1); \
	  cp "$$nginx" $(OUT)/sbin/nginx.new && mv $(OUT)/sbin/nginx.new $(OUT)/sbin/nginx
	@cp target/$(PROFILE)/libngx_http_kafka_module.so $(OUT)/modules/ngx_http_kafka_module.so.new
	@mv $(OUT)/modules/ngx_http_kafka_module.so.new $(OUT)/modules/ngx_http_kafka_module.so
	@cp target/$(PROFILE)/kafka-dev-broker target/$(PROFILE)/kafka-consume \
	  target/$(PROFILE)/kafka-tally target/$(PROFILE)/kafka-spool target/$(PROFILE)/kafka-sites target/$(PROFILE)/kafka-msk-token $(OUT)/bin/
	@echo "built $(OUT)/sbin/nginx ($$($(OUT)/sbin/nginx -v 2>&1 | sed 's/.*: //')) and $(OUT)/modules/ngx_http_kafka_module.so"

run: build
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory build
	cd sdk && npm test --silent
	$(CARGO) test --$(PROFILE) --no-fail-fast
	@$(MAKE) --no-print-directory test-debian
	@$(MAKE) --no-print-directory test-container
	@$(MAKE) --no-print-directory fuzz-smoke

# A short, seeded run of every cargo fuzz target, and the known inputs replayed
# (fuzz/README.md); `scripts/fuzz.sh long SECONDS` for long runs by hand.
fuzz-smoke:
	scripts/fuzz.sh smoke
	scripts/fuzz.sh regressions

# The container image (Dockerfile), built with podman on a Debian base made here
# (scripts/container.sh); t/container.rs runs it, the manifests and the Debian package.
image:
	@scripts/deps.sh container
	scripts/container.sh build nginx-kafka:latest

# libnginx-mod-http-kafka for Debian's nginx, into build/deb/ (scripts/build-deb.sh).
deb:
	@scripts/deps.sh debian
	scripts/build-deb.sh

test-container:
	@scripts/deps.sh container
	@scripts/deps.sh debian
	scripts/build-deb.sh
	scripts/container.sh build localhost/nginx-kafka:test
	NGINX_KAFKA_IMAGE=localhost/nginx-kafka:test $(CARGO) test --$(PROFILE) --test container -- --include-ignored

# The module built against Debian's own nginx (package nginx-dev), loaded into /usr/sbin/nginx.
# Then the main suites again on that nginx, which is built --with-debug, at `error_log debug`.
test-debian:
	@scripts/deps.sh debian
	@scripts/build-debian.sh
	NGINX_BIN=/usr/sbin/nginx NGINX_MODULE=$(CURDIR)/$(OUT)/debian/ngx_http_kafka_module.so \
	  $(CARGO) test --$(PROFILE) --test debian_nginx -- --include-ignored
	NGINX_BIN=/usr/sbin/nginx NGINX_MODULE=$(CURDIR)/$(OUT)/debian/ngx_http_kafka_module.so \
	  NGINX_ERROR_LOG_LEVEL=debug $(CARGO) test --$(PROFILE) --no-fail-fast \
	  --test ingest --test outage --test exit --test subrequest --test topics --test metrics -- \
	  --skip mass_expiry

# The benchmark (bench/run.py): Debian's nginx with this module and the original Lua
# collector side by side, against nginx's own `return 204`. Results in bench/results/.
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory build
	@scripts/build-debian.sh
	python3 bench/run.py $(if $(QUICK),--quick)

clean:
	$(CARGO) clean
	rm -rf $(OUT)
