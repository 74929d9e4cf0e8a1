// neighbors.h: per-query neighbor lists and the neighbor file format (SPEC section 7).
//
// Basic usage:
//   std::vector<vismem::QueryNeighbors> qs = vismem::read_neighbor_file("neighbors.json");
//   vismem::write_neighbor_file("out.json", qs);
//
// The file is a JSON object keyed by query id; each value holds featurizer,
// image_id, image_class (one label or a list), neighbor_image_ids,
// neighbor_classes and neighbor_distances (1 - dot, ascending). Labels may be
// integers or strings; both are kept as text ("3" for 3) and compared as given.
// Thread safety: free functions over values.
#pragma once
#include <string>
#include <vector>

namespace vismem {

struct QueryNeighbors {
  std::string query_id;
  std::string featurizer;
  std::string image_id;
  std::vector<std::string> true_labels;      // one, or a set (ImageNet-ReaL style); may be empty when unknown
  std::vector<std::string> neighbor_ids;     // K
  std::vector<std::string> neighbor_labels;  // K
  std::vector<double> distances;             // K, ascending
};

// Reads and validates a neighbor file: every list the same length per query,
// distances finite and ascending (within 1e-6), at least one neighbor.
std::vector<QueryNeighbors> read_neighbor_file(const std::string& path);
std::vector<QueryNeighbors> parse_neighbor_json(const std::string& text, const std::string& name);

// Writes queries in the given order (JSON objects keep insertion order here).
void write_neighbor_file(const std::string& path, const std::vector<QueryNeighbors>& queries);
std::string neighbor_json(const std::vector<QueryNeighbors>& queries);

}  // namespace vismem
