// vit_kernels_table.h: the table of one level's kernels, defined outside the
// level's target pragma (it runs before the level is known to be supported).
// Included after vit_kernels_impl.h with VISMEM_KERNEL_NS still defined.
namespace vismem::VISMEM_KERNEL_NS {
VitKernels table(Isa isa) { return {isa, layer_norm, softmax, bias_act, swiglu, residual}; }
}  // namespace vismem::VISMEM_KERNEL_NS
