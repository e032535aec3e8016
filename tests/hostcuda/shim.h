// Host C++ stand-ins for the CUDA built-ins that gpumlp's kernels (gpumlp/kernels/fused.cu) use,
// so that the source compiles with g++ -std=c++14 and every (block, thread) pair of a launch can
// run one after another on the CPU (tests/hostcuda/__init__.py generates the loops).
//
// That is only sound for kernels where no thread reads what another thread writes: plain
// grid-stride loops.  So the shim defines exactly what such kernels need and nothing more:
//
//   * __global__ and __device__ vanish, __forceinline__ is inline;
//   * blockIdx, threadIdx, blockDim, gridDim are thread_local variables of CUDA's own types
//     (uint3 and dim3: structs of three unsigned int), so index arithmetic promotes as on the
//     device (blockIdx.x * blockDim.x is unsigned int arithmetic unless the kernel widens it);
//   * the math functions come from <cmath> / <math.h>: tanhf, expf, logf and their double forms
//     (tanh, exp, log), with the float overloads CUDA also declares in the global namespace.
//
// Deliberately NOT defined: __shared__, __syncthreads, atomics (atomicAdd, ...), warp intrinsics
// (__shfl_sync, __ballot_sync, ...), __constant__, cooperative groups.  Running the threads
// sequentially would emulate those wrongly (a barrier or a shuffle needs the threads to run
// together), so a kernel that uses one fails to build here, on purpose, until the host build
// gets a sound way to run it.
#ifndef GPUMLP_HOSTCUDA_SHIM_H
#define GPUMLP_HOSTCUDA_SHIM_H

#include <cmath>
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

static thread_local uint3 blockIdx = {0u, 0u, 0u};
static thread_local uint3 threadIdx = {0u, 0u, 0u};
static thread_local dim3 blockDim = {1u, 1u, 1u};
static thread_local dim3 gridDim = {1u, 1u, 1u};

#endif
