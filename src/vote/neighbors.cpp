#include "neighbors.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "error.h"
#include "json_text.h"
#include "textio.h"

namespace vismem {

namespace {

using ordered_json = nlohmann::ordered_json;

std::string label_text(const ordered_json& v, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  throw Error(where + ": a label must be an integer or a string");
}

const ordered_json& field(const ordered_json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) throw Error(where + ": missing \"" + key + "\"");
  return *it;
}

}  // namespace

std::vector<QueryNeighbors> parse_neighbor_json(const std::string& text, const std::string& name) {
  ordered_json root;
  try {
    root = ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw Error(name + ": a neighbor file is a JSON object keyed by query id");
  std::vector<QueryNeighbors> out;
  out.reserve(root.size());
  for (auto it = root.begin(); it != root.end(); ++it) {
    std::string where = name + ": query \"" + it.key() + "\"";
    const ordered_json& q = it.value();
    if (!q.is_object()) throw Error(where + ": not an object");
    QueryNeighbors qn;
    qn.query_id = it.key();
    if (auto f = q.find("featurizer"); f != q.end() && f->is_string()) qn.featurizer = f->get<std::string>();
    if (auto f = q.find("image_id"); f != q.end()) qn.image_id = f->is_string() ? f->get<std::string>() : f->dump();
    if (auto c = q.find("image_class"); c != q.end() && !c->is_null()) {
      if (c->is_array()) {
        for (const auto& v : *c) qn.true_labels.push_back(label_text(v, where + " image_class"));
      } else {
        qn.true_labels.push_back(label_text(*c, where + " image_class"));
      }
    }
    const auto& ids = field(q, "neighbor_image_ids", where);
    const auto& classes = field(q, "neighbor_classes", where);
    const auto& dists = field(q, "neighbor_distances", where);
    if (!ids.is_array() || !classes.is_array() || !dists.is_array())
      throw Error(where + ": neighbor_image_ids, neighbor_classes and neighbor_distances must be lists");
    if (ids.size() != classes.size() || ids.size() != dists.size())
      throw Error(where + ": neighbor lists differ in length (" + std::to_string(ids.size()) + " ids, " +
                  std::to_string(classes.size()) + " classes, " + std::to_string(dists.size()) + " distances)");
    if (ids.empty()) throw Error(where + ": no neighbors");
    for (size_t i = 0; i < ids.size(); ++i) {
      qn.neighbor_ids.push_back(ids[i].is_string() ? ids[i].get<std::string>() : ids[i].dump());
      qn.neighbor_labels.push_back(label_text(classes[i], where + " neighbor_classes"));
      if (!dists[i].is_number()) throw Error(where + ": neighbor_distances must be numbers");
      double d = dists[i].get<double>();
      if (!std::isfinite(d)) throw Error(where + ": non-finite distance");
      if (i > 0 && d < qn.distances.back() - 1e-6)
        throw Error(where + ": neighbor_distances are not in ascending order at position " + std::to_string(i));
      qn.distances.push_back(d);
    }
    out.push_back(std::move(qn));
  }
  return out;
}

std::vector<QueryNeighbors> read_neighbor_file(const std::string& path) {
  return parse_neighbor_json(read_text_file(path), "neighbor file " + path);
}

std::string neighbor_json(const std::vector<QueryNeighbors>& queries) {
  ordered_json root = ordered_json::object();
  for (const auto& q : queries) {
    ordered_json v;
    v["featurizer"] = q.featurizer;
    v["image_id"] = q.image_id.empty() ? q.query_id : q.image_id;
    if (q.true_labels.size() == 1) v["image_class"] = q.true_labels[0];
    else if (q.true_labels.empty()) v["image_class"] = nullptr;
    else v["image_class"] = q.true_labels;
    v["neighbor_image_ids"] = q.neighbor_ids;
    v["neighbor_classes"] = q.neighbor_labels;
    v["neighbor_distances"] = q.distances;
    if (root.contains(q.query_id)) throw Error("duplicate query id '" + q.query_id + "' in neighbor output");
    root[q.query_id] = std::move(v);
  }
  return json_text(root);
}

void write_neighbor_file(const std::string& path, const std::vector<QueryNeighbors>& queries) {
  std::string text = neighbor_json(queries);
  std::ofstream f(path);
  if (!f) throw Error("cannot write " + path);
  f << text << "\n";
  if (!f) throw Error("write failed: " + path);
}

}  // namespace vismem
