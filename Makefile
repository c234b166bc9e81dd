# Build the engine and run its tests. Targets:
#   make            optimised ./run for this machine (-O3 -march=native, OpenMP when available)
#   make portable   ./run without -march=native: plain C kernels, builds on any C11 compiler
#   make debug      build/debug/: -O0 -g with AddressSanitizer + UndefinedBehaviorSanitizer
#   make test       every test (C units, numpy reference, stories260K, sentencepiece)
#   make test-debug the same suite against the sanitizer build
#   make bench      speed of random-weight models (see BENCHMARKS.md)
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (clang; see TESTING.md)
#   make clean

CC      ?= cc
PYTHON  ?= /usr/bin/python3
ARCH    ?= -march=native
# OpenMP is optional: use it only if the compiler accepts -fopenmp.
OPENMP  := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
WARN    = -std=c11 -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-unknown-pragmas
CFLAGS  = $(WARN) -O3 $(ARCH) $(OPENMP) -D_POSIX_C_SOURCE=200809L -MMD -MP
DFLAGS  = $(WARN) -O0 -g -fsanitize=address,undefined -fno-omit-frame-pointer -D_POSIX_C_SOURCE=200809L -MMD -MP
LDLIBS  = -lm

LIB     = model.c attention.c kernels.c tokenizer.c sampler.c chat.c attnviz.c
TOOLS   = run tokenize test_sampler test_kernels

all: run

run: build/run
	cp build/run run

build/%.o: %.c | build
	$(CC) $(CFLAGS) -c $< -o $@
build/%.o: tests/%.c | build
	$(CC) $(CFLAGS) -I. -c $< -o $@
build/debug/%.o: %.c | build/debug
	$(CC) $(DFLAGS) -c $< -o $@
build/debug/%.o: tests/%.c | build/debug
	$(CC) $(DFLAGS) -I. -c $< -o $@

build/run build/test_kernels build/tokenize build/test_sampler: build/%: build/%.o $(LIB:%.c=build/%.o)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
build/debug/run build/debug/test_kernels build/debug/tokenize build/debug/test_sampler: build/debug/%: build/debug/%.o $(LIB:%.c=build/debug/%.o)
	$(CC) $(DFLAGS) $^ -o $@ $(LDLIBS)

# The attention viewer stays an editable HTML file; attnviz.c includes it as a C string.
build/attnviz_html.h: attnviz.html | build
	{ echo 'static const char attnviz_html[] = {'; od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0x00};'; } > $@
build/attnviz.o build/debug/attnviz.o: build/attnviz_html.h

portable:
	$(MAKE) ARCH= run

debug: $(TOOLS:%=build/debug/%)

test: run $(TOOLS:%=build/%)
	$(PYTHON) tests/run_tests.py

test-debug: debug
	ENGINE_BIN=build/debug ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/run_tests.py

# Fuzzing: clang's libFuzzer with ASan + UBSan; the corpora grow under build/fuzz/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_TARGETS  = checkpoint_llama2c checkpoint_tllm tokenizer encode
FUZZ_FLAGS    = -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L -I.

build/fuzz/checkpoint_llama2c: fuzz/fuzz_checkpoint.c $(LIB) | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@ $(LDLIBS)
build/fuzz/checkpoint_tllm: fuzz/fuzz_checkpoint.c $(LIB) | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFUZZ_TLLM $^ -o $@ $(LDLIBS)
build/fuzz/%: fuzz/fuzz_%.c $(LIB) | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -o $@ $(LDLIBS)
$(FUZZ_TARGETS:%=build/fuzz/%): | build/attnviz_html.h

fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	$(PYTHON) fuzz/make_seeds.py build/fuzz/seeds
	for t in $(FUZZ_TARGETS); do mkdir -p build/fuzz/corpus/$$t && \
	  build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    build/fuzz/corpus/$$t build/fuzz/seeds/$$t 2>&1 | tee build/fuzz/$$t.log | \
	    grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" ; \
	  grep -q "^stat::number_of_executed_units" build/fuzz/$$t.log || exit 1; done

bench: run
	$(PYTHON) tests/bench.py

build build/debug build/fuzz:
	mkdir -p $@

clean:
	rm -rf build run

.PHONY: all portable debug test test-debug bench fuzz clean
-include build/*.d build/debug/*.d
