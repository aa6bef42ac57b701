# Every target builds what it needs: `make test` and `make table1` work on a bare machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
EXECUTOR ?= local
# Further launcher options for every sweep, e.g. on a cluster:
#   make table1 PROFILE=paper EXECUTOR=slurm LAUNCH="--partition a100 --account vis --set data.root=/data/ytvis"
LAUNCH ?=
PROFILE ?= tiny
SEEDS ?= 5
DATA ?= data/synthetic
# The run store, for every command: `make table1 MLFLOW_TRACKING_URI=...` or the environment's.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: venv test lint data data-crossing demo table1 table2 table3 consistency consistency-lambda0 consistency-long consistency-pilot consistency2 precision-parity fp32-parity ablation ablation-clip figures mlflow-init mlflow-ui mlflow-server mlflow-server-stop \
        slurm-up slurm-down benchmarks store-load store-faults clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

# One pytest-xdist worker a core (at most 4: each holds torch and its own tracking server; the tiny data
# set and reference runs are built once for all); the workers' Slurm jobs share the test cluster and queue.
test: venv
	$(PY) -m pytest -q -n auto --maxprocesses=4 --durations=25 tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The synthetic data set, and the tiny model pretrained on its frames for every run: shipped in checkpoints/
# with its provenance, checked against the tiny config (a stale file stops here, naming `ifrvis pretrain`,
# which rebuilds it; made here only when absent).
data: venv
	test -f $(DATA)/train.json || $(VENV)/bin/ifrvis synth --out $(DATA) --seed 0
	test -f checkpoints/synthetic_tiny_pretrained.pth || \
	  $(VENV)/bin/ifrvis pretrain experiments/configs/synthetic_tiny.yaml data.root=$(DATA)
	$(VENV)/bin/ifrvis pretrain --check experiments/configs/synthetic_tiny.yaml data.root=$(DATA)

# The synthetic set whose every validation video is a same-category crossing (Table 2 and the consistency experiment
# on the tiny profile), and the overrides that point a tiny config at it.
data-crossing: data
	test -f data/synthetic_crossing/train.json || \
	  $(VENV)/bin/ifrvis synth --out data/synthetic_crossing --seed 1 --split-style crossing
CROSSING := --set data.root=data/synthetic_crossing dataset=synthetic-crossing

# What the sweeps need first: the synthetic data and tiny model (tiny profile); the paper profile reads
# the YouTube-VIS folders and COCO checkpoints the user downloaded (README, "Real data").
INPUTS := $(if $(filter paper,$(PROFILE)),venv,data)
# Table 1's two rows on the tiny profile: IFR and Mask2Former-VIS.
TINY_CONFIGS := experiments/configs/synthetic_tiny.yaml experiments/configs/synthetic_tiny_mask2former.yaml

demo: data
	$(VENV)/bin/ifrvis train experiments/configs/synthetic_tiny.yaml data.root=$(DATA)

mlflow-init: venv
	$(PY) -m ifrvis.commands.store init

# PROFILE=paper: every row of the paper's Table 1 (YouTube-VIS 2019) and Table 2 (2021), both methods; a
# subset with e.g. PAPER_TABLE1="experiments/configs/ytvis19_r50.yaml experiments/configs/ytvis19_r50_mask2former.yaml".
CONFIGS := experiments/configs
PAPER_TABLE1 ?= $(foreach b,r50 r101 swin_t swin_s swin_b,$(CONFIGS)/ytvis19_$(b).yaml $(CONFIGS)/ytvis19_$(b)_mask2former.yaml) \
    $(CONFIGS)/ytvis19_swin_l.yaml $(CONFIGS)/ytvis19_swin_l_200.yaml $(CONFIGS)/ytvis19_swin_l_200_mask2former.yaml
PAPER_TABLE2 ?= $(foreach b,r50 r101 swin_t swin_s swin_b swin_l,$(CONFIGS)/ytvis21_$(b).yaml $(CONFIGS)/ytvis21_$(b)_mask2former.yaml) \
    $(CONFIGS)/ytvis21_swin_l_200.yaml $(CONFIGS)/ytvis21_swin_l_tta.yaml
table1: $(INPUTS) mlflow-init
	$(PY) experiments/run_seeds.py $(if $(filter paper,$(PROFILE)),$(PAPER_TABLE1),$(TINY_CONFIGS)) \
	    --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH) --sweep table1
	$(PY) analysis/tables.py --sweep table1 --table 1

# Table 2 is YouTube-VIS 2021 with PROFILE=paper; on the tiny profile, the same two configs on the
# synthetic set whose every validation video is a same-category crossing.
table2: $(INPUTS) mlflow-init
	$(if $(filter paper,$(PROFILE)),,$(MAKE) --no-print-directory data-crossing)
	$(PY) experiments/run_seeds.py $(if $(filter paper,$(PROFILE)),$(PAPER_TABLE2),$(TINY_CONFIGS) $(CROSSING)) \
	    --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH) --sweep table2
	$(PY) analysis/tables.py --sweep table2 --table 1

# Table 3: tracking metrics need ground truth. Tiny profile: table1's runs (synthetic validation split
# with ground truth); PROFILE=paper: R50, Swin-L and Swin-L-200 of both methods on both datasets' held-out
# split of Sec. 4.3 (ytvis{19,21}_*_holdout.yaml).
ifeq ($(PROFILE),paper)
table3: mlflow-init
	$(PY) experiments/run_seeds.py $(sort $(wildcard experiments/configs/ytvis*_holdout.yaml)) \
	    --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH) --sweep table3
	$(PY) analysis/tables.py --sweep table3 --table 3
else
table3: table1
	$(PY) analysis/tables.py --sweep table1 --table 3
endif

# Does IFR keep identities better? The controlled consistency experiment as benchmarks/README.md
# pre-registers it. Tiny profile: IFR, Mask2Former-VIS's decoder with IFR's focal head and the published
# Mask2Former-VIS, seeds 0-7 on both synthetic splits at Table 1's budget (table1's runs are the same
# computations and are reused), then its table with intervals, exact p-values and Holm's correction.
# `make consistency-lambda0` adds the fourth arm, IFR with λ_e = 0. PROFILE=paper: table3's held-out runs.
CONSISTENCY_SEEDS ?= 8
CONSISTENCY_ARMS := $(TINY_CONFIGS) experiments/configs/synthetic_tiny_mask2former_focal.yaml
ifeq ($(PROFILE),paper)
consistency: table3
	$(PY) benchmarks/consistency.py table3 --out results/consistency

consistency-lambda0:
	@echo "make consistency-lambda0: an arm of the tiny profile's consistency experiment; PROFILE=paper has none" >&2; exit 2
else
consistency: data-crossing mlflow-init
	$(PY) experiments/run_seeds.py $(CONSISTENCY_ARMS) --seeds $(CONSISTENCY_SEEDS) --executor $(EXECUTOR) $(LAUNCH) --sweep consistency
	$(PY) experiments/run_seeds.py $(CONSISTENCY_ARMS) --seeds $(CONSISTENCY_SEEDS) --executor $(EXECUTOR) $(LAUNCH) \
	    --sweep consistency-crossing $(CROSSING)
	$(PY) benchmarks/consistency.py consistency consistency-crossing --out results/consistency

consistency-lambda0: consistency
	$(PY) experiments/run_seeds.py experiments/configs/synthetic_tiny_lambda0.yaml --seeds $(CONSISTENCY_SEEDS) \
	    --executor $(EXECUTOR) $(LAUNCH) --sweep consistency
	$(PY) experiments/run_seeds.py experiments/configs/synthetic_tiny_lambda0.yaml --seeds $(CONSISTENCY_SEEDS) \
	    --executor $(EXECUTOR) $(LAUNCH) --sweep consistency-crossing $(CROSSING)
	$(PY) benchmarks/consistency.py consistency consistency-crossing --out results/consistency
endif

# The second consistency protocol (benchmarks/README.md, "Consistency experiment, second protocol"): first
# its pilot (M2F-focal, seeds 0-1, four budgets, lr x0.1 at 80 %), which sets CONSISTENCY_ITERS; then 8
# seeds of IFR, IFR-warm, M2F-focal and M2F-VIS on both synthetic splits at that budget. A rerun skips
# finished runs: the experiment runs in parts, two seeds of every arm and split at a time so that a part
# stays balanced.
PILOT_BUDGETS := 800 1600 3200 6400
# The pilot's budget, registered in benchmarks/README.md before the main runs.
CONSISTENCY_ITERS ?= 800
# A part on a machine without the earlier parts' run store: CONSISTENCY_FROM=4 starts at seed 4, and
# CONSISTENCY_PRIOR="--prior benchmarks/results/consistency2/consistency_runs.csv" joins their rows.
CONSISTENCY_FROM ?= 0
CONSISTENCY_PRIOR ?=
CONSISTENCY2_ARMS := experiments/configs/synthetic_tiny.yaml experiments/configs/synthetic_tiny_warm.yaml \
    experiments/configs/synthetic_tiny_mask2former_focal.yaml experiments/configs/synthetic_tiny_mask2former.yaml
CONSISTENCY2_SET = --set solver.max_iters=$(CONSISTENCY_ITERS) "solver.steps=[$$(($(CONSISTENCY_ITERS) * 4 / 5))]"
consistency-pilot: data mlflow-init
	for iters in $(PILOT_BUDGETS); do \
	  $(PY) experiments/run_seeds.py experiments/configs/synthetic_tiny_mask2former_focal.yaml --seeds 2 \
	    --executor $(EXECUTOR) $(LAUNCH) --sweep consistency-pilot --set solver.max_iters=$$iters "solver.steps=[$$((iters * 4 / 5))]" \
	    || exit 1; \
	done
	$(PY) benchmarks/consistency.py consistency-pilot --out results/consistency-pilot

consistency2: data-crossing mlflow-init
	@test -n "$(CONSISTENCY_ITERS)" || { echo "make consistency2: CONSISTENCY_ITERS is not set: run make consistency-pilot and register its budget (benchmarks/README.md)" >&2; exit 2; }
	for first in $$(seq $(CONSISTENCY_FROM) 2 $$(($(CONSISTENCY_SEEDS) - 1))); do \
	  $(PY) experiments/run_seeds.py $(CONSISTENCY2_ARMS) --first-seed $$first --seeds 2 --executor $(EXECUTOR) $(LAUNCH) \
	    --sweep consistency2 $(CONSISTENCY2_SET) || exit 1; \
	  $(PY) experiments/run_seeds.py $(CONSISTENCY2_ARMS) --first-seed $$first --seeds 2 --executor $(EXECUTOR) $(LAUNCH) \
	    --sweep consistency2-crossing $(CROSSING) $(CONSISTENCY2_SET) || exit 1; \
	done
	$(PY) benchmarks/consistency.py consistency2 consistency2-crossing $(CONSISTENCY_PRIOR) --out results/consistency2

# Accuracy parity of bf16 autocast with fused AdamW against fp32 at Table 1's configs and budget, 5 seeds a
# decoder; the fp32 arm is the consistency experiment's committed rows (benchmarks/README.md).
precision-parity: data mlflow-init
	$(PY) experiments/run_seeds.py $(TINY_CONFIGS) --seeds 5 --executor $(EXECUTOR) $(LAUNCH) --sweep precision-parity \
	  --set solver.amp=bf16 solver.fused_optimizer=true
	$(PY) benchmarks/precision_parity.py

# The same for the fp32 levers, torch.compile of the training forward with fused AdamW (benchmarks/README.md,
# "Accuracy parity of torch.compile and fused AdamW"), against the same fp32 rows.
# Its control first: seed 0 of each config in fp32 eager made again, to be the committed runs to the digit.
FP32_LEVERS := solver.compile=true solver.fused_optimizer=true
fp32-parity: data mlflow-init
	$(PY) experiments/run_seeds.py $(TINY_CONFIGS) --seeds 1 --executor $(EXECUTOR) $(LAUNCH) --sweep fp32-parity-control
	$(PY) experiments/run_seeds.py $(TINY_CONFIGS) --seeds 5 --executor $(EXECUTOR) $(LAUNCH) --sweep fp32-parity \
	  --set $(FP32_LEVERS)
	$(PY) benchmarks/precision_parity.py --sweep fp32-parity --levers $(FP32_LEVERS) --control fp32-parity-control \
	  --out benchmarks/results/fp32_parity

# The same beside a 3x longer clip stage (2400 iterations, lr x0.1 at 80 % as at 800): an exploratory study
# of the tiny runs' budget, outside the pre-registered protocol (benchmarks/README.md, "Consistency"); the
# paper's schedules are its configs'.
ifeq ($(PROFILE),paper)
consistency-long:
	@echo "make consistency-long: a budget study of the tiny profile; PROFILE=paper trains on its configs' schedules" >&2; exit 2
else
consistency-long: table1
	$(PY) experiments/run_seeds.py $(TINY_CONFIGS) \
	    --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH) --sweep consistency2400 --set solver.max_iters=2400 'solver.steps=[1920]'
	$(PY) benchmarks/consistency.py table1 consistency2400 --out results/consistency-long
endif

ablation: $(INPUTS) mlflow-init
	$(PY) experiments/ablate_lambda_e.py --profile $(PROFILE) --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH)

# The second ablation: per-clip inference with T = 1, 2, 5 frames per clip (Table 4's axis), its figure.
# Inference clip length, clips side by side (clip_overlap=0: each clip tracked from the frame before
# its first frame), so that T=1 (every frame alone) is on the same line. Table 4's protocol (IFC's stride 1,
# overlap T-1) is ytvis{19,21}_swin_l_clip{2,5}.yaml.
ablation-clip: $(INPUTS) mlflow-init
	$(PY) experiments/ablate.py --key inference.clip_frames --values 1 2 5 \
	    --set inference.mode=clip inference.clip_overlap=0 --profile $(PROFILE) --seeds $(SEEDS) --executor $(EXECUTOR) $(LAUNCH)

figures: venv
	IFRVIS_PROFILE=$(PROFILE) $(PY) analysis/run_notebook.py analysis/figures.ipynb --out results/figures.ipynb

mlflow-ui: mlflow-init
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	    --backend-store-uri $(MLFLOW_TRACKING_URI)

# The cluster's tracking server (docs/cluster_store.md): PostgreSQL, proxied artifacts, basic auth with the
# users of outputs/mlflow-server/users. `make mlflow-server HOST=0.0.0.0 PORT=5000`; INSECURE=1 serves a
# non-loopback HOST without auth. HOST and PORT count only on make's command line (tcsh exports HOST).
mlflow-server: venv
	bash server/start_mlflow_server.sh \
	    --host $(if $(filter command line,$(origin HOST)),$(HOST),127.0.0.1) \
	    --port $(if $(filter command line,$(origin PORT)),$(PORT),5000) $(if $(INSECURE),--insecure)

mlflow-server-stop:
	bash server/stop_mlflow_server.sh

slurm-up:
	bash slurm/start_cluster.sh

slurm-down:
	bash slurm/stop_cluster.sh

benchmarks: data
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/model_speed.py
	$(PY) benchmarks/synthetic_quality.py

# The run store under load (32 processes on the tracking server, 8 on SQLite; then a 60-s kill of the
# server), and a λ_e ablation on the Slurm test cluster through server and PostgreSQL restarts
# (benchmarks/README.md, "Run store under load and faults"; needs PostgreSQL, and `make slurm-up`).
store-load: venv
	$(PY) benchmarks/store_load.py --csv benchmarks/results/store_load/load.csv
	$(PY) benchmarks/store_load.py --store server --outage 60 --csv benchmarks/results/store_load/outage_60s.csv

store-faults: data
	$(PY) benchmarks/store_faults_slurm.py --csv benchmarks/results/store_faults/runs.csv

clean:
	rm -rf outputs results mlruns mlartifacts
