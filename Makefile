# CAR: build, test, demo, bench. Binaries land in $(BUILD)/bin.
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD ?= build
SAN_FLAGS :=
OPT := -O2
endif

CC := mpicc
PKGS := hdf5-openmpi openblas libconfig jansson
# recursive: pkg-config runs after scripts/install-deps.sh has had its turn
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS))
CFLAGS = -std=c11 $(OPT) -fopenmp-simd -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude $(PKG_CFLAGS) $(SAN_FLAGS) -MMD -MP
LDFLAGS = $(SAN_FLAGS)
LDLIBS = $(PKG_LIBS) -lm

PROGS := car_prep car_synth car_train car_recommend
LIB_SRCS := $(filter-out $(addprefix src/,$(addsuffix .c,$(PROGS))),$(wildcard src/*.c))
LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
# tests/faults/*.c: helper programs of the fault scripts; shim_*.c: LD_PRELOAD libraries
TEST_SRCS := $(filter-out tests/faults/shim_%.c,$(wildcard tests/unit/*.c tests/mpi/*.c tests/faults/*.c))
FAULT_SHIMS := $(patsubst tests/faults/%.c,$(BUILD)/tests/faults/%.so,$(wildcard tests/faults/shim_*.c))
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
BINS := $(addprefix $(BUILD)/bin/,$(PROGS))
DEPS_OK := build/.deps-ok

.PHONY: all test demo bench data clean deps
.SECONDARY:
all: $(BINS)

deps: $(DEPS_OK)
$(DEPS_OK): scripts/install-deps.sh
	@scripts/install-deps.sh
	@mkdir -p build && touch $@

$(BUILD)/obj/%.o: src/%.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) -c $< -o $@

# AdamW's sqrt vectorises only where it need not set errno (its argument, v / (1 - beta2^t), is >= 0)
$(BUILD)/obj/optim.o: CFLAGS += -fno-math-errno

$(BUILD)/bin/%: $(BUILD)/obj/%.o $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "LD $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIB_OBJS) tests/check.h | $(DEPS_OK)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) -Itests $< $(LIB_OBJS) -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJS) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $< $(LIB_OBJS) -o $@ $(LDFLAGS) $(LDLIBS)

# bench_train times every cblas_sgemm of the step (its __wrap_cblas_sgemm)
$(BUILD)/bench/bench_train: LDFLAGS += -Wl,--wrap=cblas_sgemm

# no sanitizers and no MPI: preloaded into any program, mpirun included
$(BUILD)/tests/faults/shim_%.so: tests/faults/shim_%.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC $< -o $@ -ldl

test: $(BINS) $(TEST_BINS) $(FAULT_SHIMS)
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) tests/run_tests.sh

demo: $(BINS)
	@BUILD=$(BUILD) scripts/demo.sh

bench: $(BINS) $(BENCH_BINS)
	@BUILD=$(BUILD) scripts/bench.sh

# Prepared Amazon sets from raw inputs (sequences.txt + items.jsonl per set)
AMAZON_DIR ?= $(if $(wildcard ../shared/data/amazon),../shared/data/amazon,)
data: $(BINS)
	@BUILD=$(BUILD) AMAZON_DIR=$(AMAZON_DIR) scripts/prepare_amazon.sh

# Every program on PATH (mpirun -n 64 car_train configs/sports.cfg from the repository root);
# staged installs with DESTDIR. make uninstall removes exactly what install put there.
PREFIX ?= /usr/local
.PHONY: install uninstall
install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(PROGS))

# Fuzzing (fuzz/README.md): libFuzzer harnesses with ASan and UBSan, built by clang (Debian's
# clang and libclang-rt, from scripts/install-deps.sh); the library is compiled again with clang
# (-Wno-pass-failed: at -O1 under ASan clang may not vectorise an `omp simd` loop; that is no error here).
FUZZ_BUILD ?= $(BUILD)/fuzz
FUZZ_CC ?= clang
FUZZ_BINS := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_OBJS := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRCS))
FUZZ_CFLAGS = -std=c11 -O1 -fopenmp-simd -Wno-pass-failed -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude $(shell mpicc -showme:compile) $(PKG_CFLAGS) \
	-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -MMD -MP
.PHONY: fuzz
fuzz: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: src/%.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	@echo "CLANG $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJS) | $(DEPS_OK)
	@echo "CLANG $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJS) -o $@ $(shell mpicc -showme:link) $(PKG_LIBS) -lm

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(patsubst %,$(BUILD)/obj/%.d,$(PROGS))
-include $(FUZZ_OBJS:.o=.d) $(FUZZ_BINS:=.d)
