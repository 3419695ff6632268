# Source on a machine without symnas installed (the lent GPU machine): `source benchmarks/gpu_env.sh`.
# Installs PyGlove's wheels from $WHEELS (default carry/wheels; no index needed) into /tmp/site when
# pyglove is missing, and builds $SYMNAS_SRC (default /tmp/symnas_src), a tree of links laid out as setup.cfg's
# package_dir installs the package (symnas/, with algorithms/ and spaces/ as symnas.algorithms and
# symnas.spaces), so `import symnas` works from the checkout without pip installing it. Exports PYTHONPATH,
# PYTHONUNBUFFERED and PYTHON (python3 unless set).
PYTHON=${PYTHON:-python3}
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! "$PYTHON" -c "import pyglove" 2> /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      "${WHEELS:-carry/wheels}"/*.whl > /dev/null 2>&1 || echo "gpu_env: could not install the wheels in ${WHEELS:-carry/wheels}" >&2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
_src=${SYMNAS_SRC:-/tmp/symnas_src}
rm -rf "$_src" && mkdir -p "$_src/symnas"
cp -rs "$_repo/symnas/." "$_src/symnas/"
ln -sfn "$_repo/algorithms" "$_src/symnas/algorithms"
ln -sfn "$_repo/spaces" "$_src/symnas/spaces"
export PYTHONPATH=$_src:$_repo${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHON
# Checked from the link tree: run from the checkout's root, `python -c` would find its bare symnas/ first.
(cd "$_src" && "$PYTHON" -c "import symnas, symnas.algorithms, symnas.spaces") || echo "gpu_env: symnas does not import" >&2
unset _repo _src
