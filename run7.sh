python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit
date -u
timeout 150 python3 -m pytest -o addopts= -q -p no:warnings -p no:cacheprovider tests/kernels/test_gptq_cuda_act_order.py tests/runtime/test_pdl_cuda.py tests/runtime/test_fold_act_order_cuda.py tests/kernels/test_gptq_cuda_mid_m.py > $OUT/tests.txt 2>&1; echo "tests rc=$?"; tail -2 $OUT/tests.txt
timeout 120 python3 benchmarks/gpu_pdl.py --batch 1 16 --modes 0 2 --rounds 2 > $OUT/pdl.txt 2>&1; grep "best\|equal" $OUT/pdl.txt | grep -v "mode 0 logits"
timeout 110 python3 benchmarks/gpu.py --only gptq > $OUT/gptq.txt 2>&1; grep -A40 "==== table" $OUT/gptq.txt | sed 's/ *| */|/g' | cut -d'|' -f1-2 | grep "M=\|layer"
