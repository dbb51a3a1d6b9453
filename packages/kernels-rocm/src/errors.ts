/**
 * Errors of `@kvq/kernels-rocm`. The backend is `@kvq/kernels-cuda/gpu`'s facade with the ROCm spec, so ops throw
 * `@kvq/kernels`' {@link KernelError} exactly like every other backend (`BACKEND_UNAVAILABLE` when there is no HIP
 * addon / runtime / AMD GPU, the shared validation codes for bad input). The FP8 helpers of this package throw
 * `INVALID_ARGUMENT` for an unreadable architecture name or a bad scale.
 * @module
 */
import { KernelError } from '@kvq/kernels';

/** `INVALID_ARGUMENT` naming the argument and the value it got. */
export function invalidArgument(argument: string, message: string): KernelError {
  return new KernelError('INVALID_ARGUMENT', message, { argument });
}

export { KernelError };
