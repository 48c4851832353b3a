python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit
timeout 60 python3 -m pytest -o addopts= -q -p no:warnings -p no:cacheprovider tests/runtime/test_pdl_cuda.py 2>&1 | tail -2
for b in 0 1 2 4; do echo "== FUSEGRAPH_PDL_L2=$b"; FUSEGRAPH_PDL_L2=$b timeout 130 python3 benchmarks/gpu_pdl.py --batch 1 32 --modes 0 2 --rounds 3 > $OUT/l2_$b.txt 2>&1; grep "best\|equal" $OUT/l2_$b.txt | grep -v "mode 0 logits"; done
