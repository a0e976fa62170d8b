# Custos: a thin wrapper around CMake. `make demo` and `make check` are the two
# quick-start commands; each installs what is missing, builds, then runs.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE      ?= cmake
CTEST      ?= ctest

# Every Debian package the build, the tests and the demo need.
DEPS = build-essential cmake pkg-config clang libclang-rt-14-dev \
       libssl-dev openssl libp11-kit-dev p11-kit libtasn1-6-dev libtasn1-bin \
       libcunit1-dev libjansson-dev libsqlite3-dev sqlite3 libpq-dev postgresql libevent-dev libcurl4-openssl-dev \
       softhsm2 opensc gnutls-bin libengine-pkcs11-openssl \
       swtpm swtpm-tools tpm2-tools libtss2-dev libtpm2-pkcs11-1 libtpm2-pkcs11-tools \
       tpm2-abrmd libtss2-tcti-tabrmd0 dbus curl python3 xxd bc procps jq iproute2

.PHONY: all build deps check check-build check-asan demo clean

all: build

build:
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@$(CMAKE) --build $(BUILD) -j $(JOBS)

# Idempotent and quiet when everything is present; non-interactive otherwise.
deps:
	@missing=$$(for p in $(DEPS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

check: deps
	@$(MAKE) --no-print-directory check-build
	@$(MAKE) --no-print-directory check-asan

check-build: build
	cd $(BUILD) && $(CTEST) --output-on-failure -j $(JOBS)

# The same tests in an AddressSanitizer + UndefinedBehaviorSanitizer build.
check-asan:
	@$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCUSTOS_SANITIZE=ON >/dev/null
	@$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && $(CTEST) --output-on-failure -j $(JOBS)

demo: deps build
	@tools/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
