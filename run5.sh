python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit
timeout 120 python3 -m pytest -o addopts= -q -p no:warnings -p no:cacheprovider tests/runtime/test_pdl_cuda.py tests/runtime/test_fold_act_order_cuda.py 2>&1 | tail -2
timeout 170 python3 benchmarks/gpu_pdl.py --batch 1 4 16 32 --modes 0 2 --rounds 2 > $OUT/pdl.txt 2>&1; grep "best\|equal\|round" $OUT/pdl.txt | grep -v "mode 0 logits"
FUSEGRAPH_PDL=0 timeout 200 python3 benchmarks/gpu.py --only gptq > $OUT/gptq_nopdl.txt 2>&1; grep -A40 "==== table" $OUT/gptq_nopdl.txt | grep "M=1 \|M=4 \|M=16 \|layer" | cut -c1-200
