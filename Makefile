# tapstack — a userspace UDP/IPv4 stack on a Linux TAP device.
#   make run     the stack in network namespace `tapstack` on tap0 (root)
#   make test    unit tests, then interop tests in namespaces of their own (root)

SWIFT ?= swift
SWIFT_FLAGS ?=
SCRATCH_TSAN = .build-tsan

.PHONY: all deps build release run needs-root install uninstall test test-unit test-replay test-interop test-fuzz test-consumer test-tsan test-asan test-sanitizers fuzz soak bench bench-inprocess clean

all: build

deps:
	@Scripts/install-deps.sh

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

release: deps
	$(SWIFT) build -c release $(SWIFT_FLAGS)

# Root first, then a build only if a source changed (build output on
# standard error, so that `make run ARGS="--pcap -" | tcpdump -r -` reads
# nothing but the capture).
SOURCES := Package.swift $(shell find Sources Examples -type f 2>/dev/null)
.build/release/tapstack: $(SOURCES)
	@Scripts/install-deps.sh >&2
	@$(SWIFT) build -c release $(SWIFT_FLAGS) >&2

# Installs under PREFIX (default /usr/local; DESTDIR for packaging): the
# tool, the preload library `tapstack exec` uses, the man page generated
# from the argument parser, shell completions and the systemd unit example.
PREFIX ?= /usr/local
install: .build/release/tapstack
	@$(SWIFT) package plugin generate-manual >&2
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)$(PREFIX)/share/doc/tapstack
	install -m 755 .build/release/tapstack $(DESTDIR)$(PREFIX)/bin/tapstack
	install -m 755 .build/release/libtapstack-preload.so $(DESTDIR)$(PREFIX)/lib/libtapstack-preload.so
	install -m 644 .build/plugins/GenerateManual/outputs/tapstack/tapstack.1 $(DESTDIR)$(PREFIX)/share/man/man1/tapstack.1
	.build/release/tapstack --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/tapstack
	.build/release/tapstack --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_tapstack
	.build/release/tapstack --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/tapstack.fish
	sed 's|/usr/local/bin/tapstack|$(PREFIX)/bin/tapstack|' Examples/systemd/tapstack@.service > $(DESTDIR)$(PREFIX)/share/doc/tapstack/tapstack@.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tapstack $(DESTDIR)$(PREFIX)/lib/libtapstack-preload.so \
		$(DESTDIR)$(PREFIX)/share/man/man1/tapstack.1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions/tapstack \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_tapstack $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/tapstack.fish \
		$(DESTDIR)$(PREFIX)/share/doc/tapstack/tapstack@.service

needs-root:
	@if [ "$$(id -u)" -ne 0 ]; then echo "make run needs root (it creates a network namespace and a TAP device): sudo make run" >&2; exit 1; fi

run: needs-root .build/release/tapstack
	@Scripts/run.sh $(ARGS)

test: test-unit test-replay test-interop test-fuzz test-consumer

# A package depending on tapstack by URL and version (a tagged copy of this tree) builds and runs.
test-consumer: deps
	@Tests/Consumer/run.sh

test-unit: deps
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests
	$(SWIFT) test $(SWIFT_FLAGS) --skip-build

test-replay: build
	@Tests/Replay/run.sh

test-interop: build
	@Tests/Interop/run.sh

# The unit and concurrency suites under ThreadSanitizer.
test-tsan: deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path $(SCRATCH_TSAN) $(SWIFT_FLAGS)
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --sanitize=thread --scratch-path $(SCRATCH_TSAN) $(SWIFT_FLAGS)

SCRATCH_ASAN = .build-asan

# The unit and concurrency suites under AddressSanitizer (XCTest's own leaks ignored).
test-asan: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path $(SCRATCH_ASAN) -Xswiftc -use-ld=lld $(SWIFT_FLAGS)
	ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test --skip-build --sanitize=address --scratch-path $(SCRATCH_ASAN) -Xswiftc -use-ld=lld $(SWIFT_FLAGS)

test-sanitizers: test-tsan test-asan

# libFuzzer over every parser and the stack core, FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) Scripts/fuzz.sh

# A short fuzz of every target, part of `make test`.
test-fuzz: deps
	FUZZ_SECONDS=5 Scripts/fuzz.sh

# UDP echo and ping at 80 % of capacity for DURATION seconds (root).
DURATION ?= 600
soak: release
	DURATION=$(DURATION) Scripts/soak.sh

# UDP echo against a TAP reflector (blocking and busy-polling), interleaved rounds: medians, min, max, CPU per echo (root).
bench: release
	@Scripts/bench.sh

# In-process benchmarks (ordo-one/benchmark): throughput and mallocs per packet.
bench-inprocess: deps
	TAPSTACK_BENCHMARKS=1 $(SWIFT) package --scratch-path .build-bench --allow-writing-to-package-directory benchmark --target StackBenchmarks

clean:
	rm -rf .build .build-*
