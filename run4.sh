python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit
timeout 200 python3 benchmarks/gpu_sweep.py --only "attention decode" > $OUT/attn.txt 2>&1; grep "attn bs\|paged attention\|WRONG\|FAILED" $OUT/attn.txt | cut -c1-900
timeout 200 python3 benchmarks/gpu.py --only gptq > $OUT/gptq.txt 2>&1; tail -45 $OUT/gptq.txt
