// hash.h: sha256 of files and strings (OpenSSL), for model fingerprints.
//
// Basic usage:
//   std::string hex = vismem::sha256_file("model.tflite");  // 64 lowercase hex chars
//
// Thread safety: free functions; safe from any thread.
#pragma once
#include <string>

namespace vismem {

std::string sha256_file(const std::string& path);
std::string sha256_hex(const void* data, size_t size);

}  // namespace vismem
