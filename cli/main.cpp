// vismem: the command line. A thin edge over the library: parse, call, print;
// every error becomes a one-line message on stderr and exit code 1.
#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include "common.h"
#include "cpu.h"
#include "error.h"
#include "flat_index.h"
#include "linalg.h"
#include "memory.h"

// OpenBLAS 0.3.21 does not recognize recent Xeons and falls back to its SSE3
// "Prescott" kernels (about 5x slower sgemm). The kernel choice is made when
// the library loads, so the only fix from inside is to restart with
// OPENBLAS_CORETYPE set. A user's own OPENBLAS_CORETYPE always wins.
static void use_fast_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("VISMEM_NO_BLAS_REEXEC")) return;
  const char* core = openblas_get_corename();
  if (!core || std::strcmp(core, "Prescott") != 0) return;
  __builtin_cpu_init();
  const char* type = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
  if (!type) return;
  setenv("OPENBLAS_CORETYPE", type, 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on with the slow kernels
}

// `vismem version`: what this binary runs on this machine (the kernel level
// chosen at run time, VISMEM_ISA included; the BLAS kernels; the file format).
static void add_version_command(CLI::App& app) {
  app.add_subcommand("version", "Print the CPU, the kernels chosen for it and the memory format")->callback([] {
    std::cout << "vismem (memory format v" << vismem::Memory::format_version << ")\n"
              << "cpu      " << vismem::cpu_description() << "\n"
              << "blas     OpenBLAS " << openblas_get_corename() << " kernels, " << vismem::blas_threads()
              << " threads\n"
              << "float16  " << (vismem::flat_f16_supported() ? "yes (F16C)" : "no (no F16C: --f16 is refused)") << "\n"
              << "threads  " << vismem::default_threads() << " (VISMEM_THREADS or the cores)\n";
  });
}

int main(int argc, char** argv) {
  use_fast_blas_kernels(argv);
  // A typo is said at once, also where a recorded or given precision makes
  // the variable irrelevant (where it decides, the command fails on it).
  if (const char* p = std::getenv("VISMEM_PRECISION"); p && *p && std::strcmp(p, "f32") != 0 && std::strcmp(p, "int8") != 0)
    std::fprintf(stderr, "vismem: warning: VISMEM_PRECISION=%s is not f32|int8\n", p);
  CLI::App app{"vismem: a visual memory for image classification (kNN over embeddings)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every subcommand");
  vismem::cli::add_memory_commands(app);
  vismem::cli::add_index_commands(app);
  vismem::cli::add_eval_commands(app);
  vismem::cli::add_image_commands(app);
  vismem::cli::add_prune_commands(app);
  vismem::cli::add_explain_commands(app);
  vismem::cli::add_experiment_commands(app);
  vismem::cli::add_serve_commands(app);
  add_version_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --help-all
    return app.exit(e);
  } catch (const CLI::ConversionError& e) {
    // A number that does not parse or does not fit its type (never narrowed).
    std::cerr << "error: " << e.what() << " (not a whole number in range)\n";
    return 1;
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const vismem::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::length_error& e) {  // a size field no reader caught: never a bare "vector::_M_..." line
    std::cerr << "error: an input asks for more memory than can exist (a corrupt size?): " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
