#!/usr/bin/env bash
# Start-up cost of the model identity (issue 12) on the full-size random model: rank 0's "model identity"
# phase of `sdxl-batch encode`, with a cold page cache where the machine allows dropping it.
set -o pipefail
export PATH=/opt/torch/.venv/bin:$PATH
export LD_LIBRARY_PATH=$PWD/.prebuilt/lib:$(python3 -c 'import os,torch;print(os.path.dirname(torch.__file__)+"/lib")')
bin=$PWD/.prebuilt/apps/sdxl-batch
$bin make-demo-model /tmp/full --full --dtype fp16 >/dev/null
du -sh /tmp/full
mkdir -p /tmp/id && cd /tmp/id
printf 'model: /tmp/full\nprompts: ["a", "b"]\nwidth: 1024\nheight: 1024\ndtype: fp16\noutput: out\n' > job.yaml
for i in 1 2 3; do
  sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then c=cold; else c=warm; fi
  $bin encode job.yaml 2>&1 | grep -o "startup: .*" | sed "s/^/$c: /"
done
for i in 1 2; do $bin encode job.yaml 2>&1 | grep -o "startup: .*" | sed "s/^/warm: /"; done
