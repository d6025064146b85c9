# Sourced by gpu-bench.sh and gpu-checks.sh: nvidia_icd prints the NVIDIA Vulkan driver file
# (nvidia_icd*.json) the loader should use, or nothing. An existing VK_DRIVER_FILES wins, so a
# caller's choice carries through to the scripts it runs. Pointing the loader at this file alone
# keeps wgpu from falling back to a CPU implementation (lavapipe) and timing that instead.
nvidia_icd() {
  if [ -n "${VK_DRIVER_FILES:-}" ] && [ -f "$VK_DRIVER_FILES" ]; then
    echo "$VK_DRIVER_FILES"
    return
  fi
  local f
  for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json \
           /usr/local/share/vulkan/icd.d/nvidia_icd*.json \
           /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 0 # none found: an empty answer, not a failure (callers run under set -e)
}
