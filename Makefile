# Developer entry points. Everything a command needs, it installs (pinned) itself.
.PHONY: test tools build run bench cost verify-artifacts fuzz fuzz-merge clean

## make test: everything CI runs (fmt, clippy, all tests against real moto + HTTP servers, template checks)
test:
	scripts/test.sh

## make tools: the pinned Python tools (moto, SAM CLI, cfn-lint) into .venv
tools:
	scripts/tools.sh

## make run: the whole relay locally (ingest :9000, in-process queue, dispatcher, dev receiver :3002) + a demo
run:
	scripts/demo.sh

## make bench: the benchmark suite (not part of make test): results in bench-results/, see bench/README.md
bench:
	bench/run.sh

## make cost: dollars per million events by line, and capacity, from template.yaml + bench-results (or cost/measured.json) + cost/prices-us-east-1.yaml; offline
cost:
	cargo run --quiet --locked -p relay-bench --bin relay-cost

## make verify-artifacts: sam build the three arm64 functions, then run those very bootstraps under qemu-aarch64 against moto and a verifying receiver (not part of make test)
verify-artifacts:
	scripts/verify-artifacts.sh

## make fuzz: every fuzz target for FUZZ_SECONDS (default 60) each, one core; see fuzz/README.md
fuzz:
	fuzz/run.sh $(FUZZ_TARGETS)

## make fuzz-merge: minimise the committed corpora together with the inputs `make fuzz` found
fuzz-merge:
	fuzz/run.sh merge $(FUZZ_TARGETS)

build:
	cargo build --workspace --locked

clean:
	cargo clean
	rm -rf .venv .venv-build .aws-sam
