# loupe — plain GNU make. `make test` and `make run` install missing Debian packages first.
CC      ?= cc
BUILD   ?= build
BIN     ?= loupe
PKGS    := openblas jansson libpcre2-8 libutf8proc sqlite3 libzip
UI_PKGS := ncursesw readline
OPT     ?= -O2 -march=native
CFLAGS_BASE = -std=c11 -g $(OPT) -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -Isrc \
              $(shell pkg-config --cflags $(PKGS) $(UI_PKGS) 2>/dev/null) $(SANFLAGS)
LDLIBS_BASE = $(shell pkg-config --libs $(PKGS) $(UI_PKGS) 2>/dev/null) -lm -lpthread $(SANFLAGS)

ENGINE_SRC := $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c))
STORE_SRC  := $(wildcard store/*.c)
UI_SRC     := $(wildcard ui/*.c)
LIB_SRC    := $(ENGINE_SRC) $(STORE_SRC) $(UI_SRC)
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
REPLAY_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz-replay/%,$(wildcard tests/fuzz/fuzz_*.c))
TOOL_SRC   := $(wildcard tests/tools/*.c)
TOOL_BIN   := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
HEADERS    := $(wildcard include/loupe/*.h) $(wildcard src/*.h src/*/*.h) $(wildcard ui/*.h) $(wildcard store/*.h)

# A single-node Slurm for tests/e2e/slurm.sh, which configures and starts its own daemons.
SLURM_NEEDS := file:/usr/sbin/slurmctld:slurmctld file:/usr/sbin/slurmd:slurmd cmd:sbatch:slurm-client file:/usr/sbin/munged:munge
# Debian packages: pkg-config name, command or file -> package that provides it.
DEB_NEEDS := pc:openblas:libopenblas-dev pc:jansson:libjansson-dev pc:libpcre2-8:libpcre2-dev \
             pc:sqlite3:libsqlite3-dev pc:cmocka:libcmocka-dev pc:ncursesw:libncurses-dev \
             pc:readline:libreadline-dev pc:libutf8proc:libutf8proc-dev pc:libzip:libzip-dev cmd:tmux:tmux cmd:jq:jq cmd:parallel:parallel cmd:sqlite3:sqlite3 cmd:pkg-config:pkg-config \
             $(SLURM_NEEDS)
FUZZ_NEEDS := cmd:clang:clang file:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a:libclang-rt-14-dev

.PHONY: all deps deps-fuzz test check check-kernels run bench sanitize fuzz clean tools check-model model sae-model encoder-model encoder-polarity-model t5-model
all: $(BIN)

$(BIN): $(LIB_OBJ) $(BUILD)/src/main.o
	@echo "ld $@"
	@$(CC) -o $@ $^ $(LDLIBS_BASE)

# AdamW's sqrtf vectorises only without errno; training's attention takes fused
# multiply-adds (each file's header says why).
$(BUILD)/src/train/adamw.o: CFLAGS_BASE += -fno-math-errno
$(BUILD)/src/kernels/attention16.o $(BUILD)/src/train/train.o: CFLAGS_BASE += -ffp-contract=fast

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "cc $<"
	@$(CC) $(CFLAGS_BASE) -c -o $@ $<

# Tests and tools also include their own headers and the engine's: rebuilt when any changes.
$(BUILD)/tests/%: tests/%.c $(LIB_OBJ) $(HEADERS) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	@echo "ld $@"
	@$(CC) $(CFLAGS_BASE) -o $@ $< $(LIB_OBJ) $(LDLIBS_BASE) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(LIB_OBJ) $(HEADERS) $(wildcard tests/tools/*.h)
	@mkdir -p $(dir $@)
	@echo "ld $@"
	@$(CC) $(CFLAGS_BASE) -o $@ $< $(LIB_OBJ) $(LDLIBS_BASE)

tools: $(TOOL_BIN)

# The fuzz harnesses without libFuzzer, replaying their corpora (tests/e2e/fuzz_corpus.sh).
$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay.c $(LIB_OBJ) $(HEADERS) $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	@echo "ld $@"
	@$(CC) $(CFLAGS_BASE) -o $@ $< tests/fuzz/replay.c $(LIB_OBJ) $(LDLIBS_BASE)

# Installs what is missing, and only that (needs root or sudo; CI runs as root).
define install_missing
	@missing=""; for need in $(1); do kind=$${need%%:*}; rest=$${need#*:}; what=$${rest%:*}; pkg=$${rest##*:}; \
	  case $$kind in \
	    pc) pkg-config --exists $$what 2>/dev/null || missing="$$missing $$pkg";; \
	    cmd) command -v $$what >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    file) [ -e $$what ] || missing="$$missing $$pkg";; \
	  esac; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null \
	    || { echo "error: could not install$$missing; install them with apt-get and retry" >&2; exit 1; }; \
	fi
endef

deps:
	$(call install_missing,$(DEB_NEEDS))

deps-fuzz: deps
	$(call install_missing,$(FUZZ_NEEDS))

# The test suites: every cmocka suite, then the end-to-end scripts.
check: $(BIN) $(TEST_BIN) $(TOOL_BIN) $(REPLAY_BIN)
	@BUILD=$(BUILD) LOUPE=./$(BIN) sh tests/run.sh $(TEST_BIN)

test: deps
	@$(MAKE) --no-print-directory check

# The suites a second time under another OpenBLAS kernel and on one thread: float results
# differ in their last digits between kernels, and a test that holds on one only must not
# land (CI runs this after make test). Haswell (AVX2) unless that is the kernel already in
# use, else Sandybridge (AVX); never one the CPU cannot run.
check-kernels: $(BIN) $(TEST_BIN) $(TOOL_BIN)
	@now=$$($(BUILD)/tools/blas_core); \
	if [ "$$now" != haswell ] && grep -qw avx2 /proc/cpuinfo; then other=Haswell; \
	elif grep -qw avx /proc/cpuinfo; then other=Sandybridge; else other=Prescott; fi; \
	echo "check-kernels: OpenBLAS picks $$now here; the suites again with OPENBLAS_CORETYPE=$$other on 1 thread"; \
	OPENBLAS_CORETYPE=$$other OPENBLAS_NUM_THREADS=1 BUILD=$(BUILD) LOUPE=./$(BIN) sh tests/run.sh $(TEST_BIN)

sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/san BIN=build/san/loupe OPT="-O1" \
	  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -DLP_POISON_ARENAS" check

DEFAULT_MODEL = $(firstword $(wildcard models/default) $(wildcard ../shared/models/stories260K/stories260K.bin))
# make run opens the browser on the default model with this example already run (no
# terminal: the run's predictions are printed instead).
RUN_TEXT = $(if $(filter models/default,$(DEFAULT_MODEL)),When Mary and John went to the store$(,) John gave a drink to,Once upon a time$(,) Lily found a ball. Lily liked the ball and played with it.)
, := ,
run: deps
	@$(MAKE) --no-print-directory loupe
	@if [ -z "$(DEFAULT_MODEL)" ]; then \
	  echo "error: no default model: put one in models/default or run ./loupe PATH (see models/README.md)" >&2; exit 1; fi
	@if [ -t 0 ] && [ -t 1 ]; then \
	  echo "./loupe --tui $(DEFAULT_MODEL) -e 'run $(RUN_TEXT)'"; ./loupe --tui $(DEFAULT_MODEL) -e 'run $(RUN_TEXT)'; \
	else ./loupe $(DEFAULT_MODEL) -e 'run $(RUN_TEXT)' -e 'top 5'; fi

# The bundled model: trained by loupe itself from its own corpus, in two stages. Every
# setting is spelled out so that these lines are the whole recipe; the seeds fix the corpus,
# the initial weights and the batches, and --threads 2 the shards (the result depends on
# it). The first stage forms the circuits (about 26 minutes on two idle cores); the second
# starts from it (--from) on the same corpus with a random-id IOI story before every
# document (--random-ioi 1) and half the IOI stories scrambled (--scrambled 0.5: the same
# roles among random words) at lr 2e-3, which makes its IOI circuit work in sentence frames
# it never saw (about 4 minutes). The weights are committed: nobody needs to run this to
# use loupe, and CI does not. They came from an earlier first stage and second stage; what
# this recipe gives today meets the same target: README, "The bundled model", "Reproducing it".
MODEL_RECIPE = --layers 2 --heads 4 --d-model 64 --d-mlp 256 --ctx 128 --vocab 2048 --corpus-mb 48 \
               --mix 0.65,0.25,0.1 --spans 4,12 --letter-words 0.2 --random-tokens 0.25 --embed-std 1.0 \
               --batch 32 --seq 128 \
               --steps 16000 --warmup 300 --lr 3e-3 --min-lr 1e-4 --weight-decay 0.1 --clip 1 --eval-every 500 \
               --threads 2 --seed 1
MODEL_FINETUNE = --corpus-mb 48 --mix 0.65,0.25,0.1 --spans 4,12 --letter-words 0.2 --random-tokens 0.25 \
                 --random-ioi 1 --scrambled 0.5 --batch 32 --seq 128 \
                 --steps 2000 --warmup 100 --lr 2e-3 --min-lr 1e-4 --weight-decay 0.1 --clip 1 --eval-every 500 \
                 --threads 2 --seed 2
model: deps
	@$(MAKE) --no-print-directory loupe
	rm -rf models/default.tmp models/default.base
	./loupe -e 'train models/default.base $(MODEL_RECIPE)'
	./loupe -e 'train models/default.tmp --from models/default.base $(MODEL_FINETUNE)'
	rm -rf models/default.base
	rm -f models/default.tmp/optimizer.safetensors
	rm -rf models/default && mv models/default.tmp models/default

# The bundled encoders (models/encoder): a BERT masked LM trained by loupe on the same corpus,
# then a polarity classifier started from it (--from). A few minutes on two cores; the weights
# are committed, as models/default's. `make encoder-polarity-model` retrains only the
# classifier, from the committed masked LM.
ENCODER_RECIPE = --arch bert --layers 2 --heads 4 --d-model 64 --d-mlp 256 --ctx 64 --vocab 1024 --corpus-mb 4 \
                 --mix 0.8,0.1,0.1 --batch 32 --seq 64 --steps 4000 --warmup 200 --lr 2e-3 --min-lr 1e-4 \
                 --weight-decay 0.01 --clip 1 --mask-prob 0.15 --eval-every 250 --threads 2 --seed 1
ENCODER_POLARITY_RECIPE = --arch bert --task polarity --examples 20000 --batch 32 --seq 64 --steps 2000 --warmup 100 \
                          --lr 1e-3 --min-lr 1e-4 --weight-decay 0.01 --clip 1 --eval-every 250 --threads 2 --seed 1
encoder-model: deps
	@$(MAKE) --no-print-directory loupe
	rm -rf models/encoder.tmp && mkdir -p models/encoder.tmp
	./loupe -e 'train models/encoder.tmp/mlm $(ENCODER_RECIPE)'
	./loupe -e 'train models/encoder.tmp/polarity --from models/encoder.tmp/mlm $(ENCODER_POLARITY_RECIPE)'
	rm -f models/encoder.tmp/*/optimizer.safetensors
	rm -rf models/encoder && mv models/encoder.tmp models/encoder

encoder-polarity-model: deps
	@$(MAKE) --no-print-directory loupe
	rm -rf models/encoder/polarity.tmp
	./loupe -e 'train models/encoder/polarity.tmp --from models/encoder/mlm $(ENCODER_POLARITY_RECIPE)'
	rm -f models/encoder/polarity.tmp/optimizer.safetensors
	rm -rf models/encoder/polarity && mv models/encoder/polarity.tmp models/encoder/polarity

# The bundled encoder-decoder (models/seq2seq/digits): a T5 trained by loupe to rewrite
# digits as number words under copy, reverse and swap, whose cross-attention shows which digit
# each word comes from (tests/test_seq2seq_model.c checks it). One thread: the result depends
# on the shards, and this is the recipe the committed weights came from. The weights are
# committed, as models/default's.
T5_RECIPE = --arch t5 --layers 2 --heads 4 --d-model 128 --d-mlp 512 --rules copy,reverse,swap --digits 3,8 \
            --examples 100000 --batch 32 --steps 5000 --warmup 200 --lr 1e-3 --min-lr 1e-4 --weight-decay 0.01 \
            --clip 1 --eval-every 250 --threads 1 --seed 1
t5-model: deps
	@$(MAKE) --no-print-directory loupe
	rm -rf models/seq2seq/digits.tmp && mkdir -p models/seq2seq
	./loupe -e 'train models/seq2seq/digits.tmp $(T5_RECIPE)'
	rm -f models/seq2seq/digits.tmp/optimizer.safetensors
	rm -rf models/seq2seq/digits && mv models/seq2seq/digits.tmp models/seq2seq/digits

# The bundled dictionary (models/default-sae): a TopK sparse autoencoder on the bundled
# model's residual stream between its two layers, trained by train-sae over the synthetic
# corpus (about 15 minutes on two loaded cores).
SAE_RECIPE = --site blocks.1.hook_resid_pre --arch topk --k 16 --d-sae 512 --steps 2000 --seed 0
sae-model: deps
	@$(MAKE) --no-print-directory loupe
	rm -rf models/default-sae.tmp
	./loupe -d :memory: models/default -e 'train-sae models/default-sae.tmp $(SAE_RECIPE)'
	rm -rf models/default-sae && mv models/default-sae.tmp models/default-sae

# The circuits a trained model should have (IOI, induction, the head scan, patching; see
# tests/test_default_model.c, which make test runs on models/default), on MODEL:
# make check-model MODEL=DIR.
MODEL ?= models/default
check-model: $(BUILD)/tests/test_default_model
	@LOUPE_DEFAULT_MODEL=$(MODEL) $(BUILD)/tests/test_default_model

bench: deps
	@$(MAKE) --no-print-directory loupe $(BUILD)/tools/bench $(BUILD)/tools/bench_seq2seq $(BUILD)/tools/mkmodel \
	  $(BUILD)/tools/mkgguf $(BUILD)/tools/blas_core
	@BUILD=$(BUILD) sh tests/bench/run.sh

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 20
# The library is compiled once for every harness (coverage and sanitizers, no fuzzer main),
# then each harness links against it.
FUZZ_CFLAGS = -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS) $(UI_PKGS) 2>/dev/null) \
              -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
.SECONDARY: $(FUZZ_OBJ)
build/fuzz/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "cc (fuzz) $<"
	@clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ) $(HEADERS) $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	@echo "ld (fuzz) $@"
	@clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(shell pkg-config --libs $(PKGS) $(UI_PKGS) 2>/dev/null) -lm -lpthread

fuzz: deps-fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do name=$$(basename $$f); corpus=tests/fuzz/corpus/$${name#fuzz_}; \
	  mkdir -p build/fuzz/work-$$name; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/work-$$name $$corpus 2>build/fuzz/$$name.log \
	    || { tail -30 build/fuzz/$$name.log; echo "fuzz: $$name FAILED"; exit 1; }; \
	  echo "fuzz: $$name: $$(grep -o 'stat::number_of_executed_units: *[0-9]*' build/fuzz/$$name.log | grep -o '[0-9]*$$') executions in $(FUZZ_SECONDS)s, no crash"; \
	done

clean:
	rm -rf build loupe
