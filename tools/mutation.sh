#!/usr/bin/env bash
# Mutation testing of the losses, the score term, the mining code and the scans (docs/design.md, "Mutation testing").
#
#   tools/mutation.sh [SCRATCH]        SCRATCH: a throwaway folder, /tmp/mutation by default (it is deleted first)
#
# mutmut 3 rewrites every function of the mutated modules into small variants ("mutants") and runs the tests that
# reach each one; a mutant under which every test still passes "survives". The report, SCRATCH/mutation-report.txt,
# gives the counts per file and the diff of each survivor. The shared working tree is never touched: src/ and tests/
# are copied (as they are now, committed or not) into a clone in SCRATCH, and the run happens there.
#
# Time: about 2 minutes for the losses, score term and mining (1 min 43 s in all, of which
# the mutmut run of their 361 mutants took 78 s with one worker), plus about 10 minutes for the 481 mutants of
# inference/scans.py, whose tests run optimisers: mutmut imports torch and the tests once and forks
# per mutant, and pytest stops at a mutant's first failing test.
#
# Two traps, both handled below:
# - The project is installed editable in .venv: a path line in its site-packages puts this tree's src/ on sys.path.
#   mutmut copies the sources into SCRATCH/mutants/ and puts that first on sys.path, but a package imported from the
#   wrong place tests the unmutated code ("no test covers any mutant"). So the run uses a scratch venv that reaches
#   .venv's packages through a plain .pth line naming its site-packages: .pth files inside a folder reached that
#   way are not run, so the editable path line is not either, and only the scratch copy of sluice can be imported.
#   A canary (a sign flipped in carl_loss) must make the loss tests fail before a run is trusted.
# - mutmut forks one child per mutant. A child forked after torch has used its OpenMP thread pool deadlocks in the
#   first parallel kernel (every survivor then reads "timeout"): OMP_NUM_THREADS=1 keeps torch single-threaded.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${1:-/tmp/mutation}
venv_python="$repo/.venv/bin/python"
mutated=(src/sluice/estimators/losses.py src/sluice/estimators/score_term.py src/sluice/mining/joint.py
         src/sluice/inference/scans.py)
tests=(tests/test_losses.py tests/test_score_term.py tests/test_mutants_score_term.py tests/test_mining.py
       tests/test_profiling.py tests/test_scan_regions.py)

# 1. mutmut into the project's venv (a development tool: not a dependency of sluice)
"$venv_python" -c "import mutmut" 2>/dev/null || "$venv_python" -m pip install --quiet "mutmut==3.8.1"

# 2. a scratch clone carrying the working tree's src/ and tests/
rm -rf "$scratch"
git clone --quiet "$repo" "$scratch"
rm -rf "$scratch/src" "$scratch/tests"
cp -a "$repo/src" "$repo/tests" "$scratch/"
find "$scratch/src" "$scratch/tests" -name __pycache__ -type d -prune -exec rm -rf {} +

# 3. a scratch venv that sees .venv's packages but not .venv's editable install of sluice
base_python=$("$venv_python" -c "import sys; print(sys._base_executable)")
"$base_python" -m venv --without-pip "$scratch/.venv-mut"
site=$("$scratch/.venv-mut/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$venv_python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/reach_project_venv.pth"
printf '#!%s\nfrom mutmut.__main__ import cli\ncli()\n' "$scratch/.venv-mut/bin/python" > "$scratch/.venv-mut/bin/mutmut"
chmod +x "$scratch/.venv-mut/bin/mutmut"
python="$scratch/.venv-mut/bin/python"
if (cd /tmp && "$python" -c "import sluice" 2>/dev/null); then
    echo "the scratch venv can import sluice without PYTHONPATH: a mutant run would test the wrong code" >&2
    exit 1
fi

cd "$scratch"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 4. canary: the scratch copy is what the tests import, and a flipped sign in carl_loss is caught
PYTHONPATH="$scratch/src" "$python" -c "import sluice; assert sluice.__file__.startswith('$scratch/'), sluice.__file__"
cp src/sluice/estimators/losses.py /tmp/losses.py.$$
sed -i 's/binary_cross_entropy_with_logits(-log_r_hat, y)/binary_cross_entropy_with_logits(log_r_hat, y)/' \
    src/sluice/estimators/losses.py
if PYTHONPATH="$scratch/src" nice -n 10 "$python" -m pytest -q -p no:cacheprovider -x \
        tests/test_losses.py::test_carl_minimised_by_true_ratio > canary.log 2>&1; then
    echo "canary survived: the tests do not see the scratch sources (canary.log)" >&2
    exit 1
fi
mv /tmp/losses.py.$$ src/sluice/estimators/losses.py
echo "canary killed: the tests run against $scratch/src"

# 5. the run: mutmut reads its settings from setup.cfg (one value a line)
{
    echo "[mutmut]"
    echo "source_paths=src"
    echo "only_mutate="; printf '    %s\n' "${mutated[@]}"
    echo "pytest_add_cli_args_test_selection="; printf '    %s\n' "${tests[@]}"
    # the tests of where a warning points read the call stack, which mutmut's trampolines lengthen
    printf 'pytest_add_cli_args=\n    -k\n    not at_the_callers_line\n'
} > setup.cfg
start=$(date +%s)
nice -n 10 .venv-mut/bin/mutmut run --max-children 1 > mutmut-run.log 2>&1
echo "mutmut run: $(( $(date +%s) - start )) s"

# 6. the report: counts per file (from mutmut's meta files), then every survivor with its diff
{
    "$python" - <<'EOF'
import glob
import json
from collections import Counter

names = {1: "killed", 0: "survived", 33: "no tests", -24: "timeout", -9: "timeout", None: "not run"}
for path in sorted(glob.glob("mutants/src/**/*.py.meta", recursive=True)):
    codes = json.load(open(path))["exit_code_by_key"].values()
    counts = Counter(names.get(code, f"exit {code}") for code in codes)
    print(f"{path[len('mutants/'):-len('.meta')]:40s} {len(codes):4d} mutants  "
          + "  ".join(f"{name}: {count}" for name, count in sorted(counts.items())))
EOF
    echo
    for mutant in $(.venv-mut/bin/mutmut results 2>/dev/null | awk -F: '/: survived/ {print $1}'); do
        echo "=== $mutant"
        .venv-mut/bin/mutmut show "$mutant" 2>/dev/null | grep '^[-+][^-+]' || true
    done
} > mutation-report.txt
cat mutation-report.txt
echo "report: $scratch/mutation-report.txt"
