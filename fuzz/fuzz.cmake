# Fuzz targets: fuzz/fuzz_NAME.cpp, each libFuzzer's LLVMFuzzerTestOneInput
# over one reader. In this (any-compiler) build each is linked with
# fuzz/driver.cpp, which replays fuzz/corpus/NAME and a few thousand
# deterministic mutations: the short run ctest does. scripts/fuzz.sh builds
# the same files with clang's libFuzzer and AddressSanitizer for long runs.
file(GLOB VISMEM_FUZZ_TARGETS CONFIGURE_DEPENDS fuzz/fuzz_*.cpp)
foreach(f ${VISMEM_FUZZ_TARGETS})
  get_filename_component(name ${f} NAME_WE)
  string(REPLACE "fuzz_" "" corpus ${name})
  add_executable(${name} ${f} fuzz/driver.cpp)
  target_include_directories(${name} PRIVATE fuzz)
  target_link_libraries(${name} PRIVATE vismem_lib)
  add_test(NAME ${name}_short COMMAND ${name} --iterations 10000 ${CMAKE_SOURCE_DIR}/fuzz/corpus/${corpus})
  set_tests_properties(${name}_short PROPERTIES TIMEOUT 300)
endforeach()
# The seed corpora's writer (run by hand; its outputs are committed).
add_executable(fuzz_make_seeds EXCLUDE_FROM_ALL fuzz/make_seeds.cpp)
target_include_directories(fuzz_make_seeds PRIVATE tests)
target_link_libraries(fuzz_make_seeds PRIVATE vismem_lib)
