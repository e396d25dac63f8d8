// mambactl: connection, status codes, output tables (client.h).
#include "client.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "mamba/common/v1/common.pb.h"

namespace mambactl {

namespace {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LocalError(std::string("cannot read ") + what + " '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw LocalError(std::string("cannot read ") + what + " '" + path + "'");
  return ss.str();
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The token file's first token: the first line that is neither blank nor a '#' comment
// (the server's token-file syntax).
std::string first_token(const std::string& path) {
  std::istringstream lines(read_file(path, "token file"));
  for (std::string line; std::getline(lines, line);) {
    line = trim(line);
    if (!line.empty() && line[0] != '#') return line;
  }
  throw LocalError("token file '" + path + "' holds no token");
}

}  // namespace

OutputFormat GlobalOptions::format() const {
  if (output == "csv") return OutputFormat::csv;
  if (output == "json") return OutputFormat::json;
  return OutputFormat::table;
}

Connection::Connection(const GlobalOptions& opts) : opts_(opts) {
  std::string token = opts.token;
  if (!opts.token_file.empty()) token = first_token(opts.token_file);
  if (token.find_first_of("\r\n") != std::string::npos) throw LocalError("the token holds a line break");
  if (!token.empty()) bearer_ = "Bearer " + token;

  const bool tls = !opts.tls_ca.empty() || !opts.tls_cert.empty() || !opts.tls_key.empty();
  if (opts.tls_cert.empty() != opts.tls_key.empty())
    throw LocalError("--tls-cert and --tls-key go together (mutual TLS)");
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!opts.tls_ca.empty()) ssl.pem_root_certs = read_file(opts.tls_ca, "--tls-ca");
    if (!opts.tls_cert.empty()) {
      ssl.pem_cert_chain = read_file(opts.tls_cert, "--tls-cert");
      ssl.pem_private_key = read_file(opts.tls_key, "--tls-key");
    }
    creds_ = grpc::SslCredentials(ssl);
  } else {
    creds_ = grpc::InsecureChannelCredentials();
  }
}

std::shared_ptr<grpc::Channel> Connection::new_channel(int index) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  if (!opts_.tls_server_name.empty()) args.SetSslTargetNameOverride(opts_.tls_server_name);
  if (index >= 0) {
    // Distinct arguments and a local subchannel pool: a TCP connection of its own.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("mambactl.channel_index", index);
  }
  return grpc::CreateCustomChannel(opts_.addr, creds_, args);
}

std::shared_ptr<grpc::Channel> Connection::channel() {
  if (!channel_) channel_ = new_channel(-1);
  return channel_;
}

void Connection::prepare(grpc::ClientContext& ctx) const {
  if (opts_.timeout_ms > 0)
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(opts_.timeout_ms));
  if (!bearer_.empty()) ctx.AddMetadata("authorization", bearer_);
}

std::string status_code_name(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return "CODE_" + std::to_string(code);
}

int exit_code_for(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  if (code == 0) return 0;
  return kExitStatusBase + std::clamp(code, 1, 16);
}

int report_status(const grpc::Status& status, const grpc::ClientContext* ctx) {
  std::fprintf(stderr, "error: %s: %s\n", status_code_name(status.error_code()).c_str(),
               status.error_message().c_str());
  if (ctx) {
    const auto& trailers = ctx->GetServerTrailingMetadata();
    auto it = trailers.find("mamba-error-detail-bin");
    mamba::common::v1::ErrorDetail detail;
    if (it != trailers.end() && detail.ParseFromArray(it->second.data(), static_cast<int>(it->second.size())) &&
        !detail.field().empty()) {
      if (detail.limit() > 0)
        std::fprintf(stderr, "  field %s, limit %lld\n", detail.field().c_str(), static_cast<long long>(detail.limit()));
      else
        std::fprintf(stderr, "  field %s\n", detail.field().c_str());
    }
  }
  return exit_code_for(status);
}

grpc::Status resolve_model_name(Connection& conn, std::string& name) {
  if (!name.empty()) return grpc::Status::OK;
  auto stub = mamba::forecasting::v1::ForecastingService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  mamba::forecasting::v1::ListModelsResponse resp;
  const grpc::Status st = stub->ListModels(&ctx, {}, &resp);
  if (!st.ok()) return st;
  std::vector<std::string> names;
  for (const auto& m : resp.models())
    if (std::find(names.begin(), names.end(), m.name()) == names.end()) names.push_back(m.name());
  if (names.size() > 1) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw LocalError("the server has several models (" + list + "): pass --model");
  }
  if (names.size() == 1) name = names[0];
  return grpc::Status::OK;
}

std::string cell_text(const nlohmann::json& cell, int decimals) {
  if (cell.is_string()) return cell.get<std::string>();
  if (cell.is_null()) return "NaN";
  if (cell.is_boolean()) return cell.get<bool>() ? "true" : "false";
  if (cell.is_number_integer()) return std::to_string(cell.get<int64_t>());
  if (cell.is_number_unsigned()) return std::to_string(cell.get<uint64_t>());
  if (cell.is_number_float()) {
    const double v = cell.get<double>();
    if (std::isnan(v)) return "NaN";
    char buf[64];
    if (decimals >= 0) {
      std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
      return buf;
    }
    // The values come from float32 arithmetic on the server: print the shortest text
    // that reads back to the same float, not 17 digits of noise.
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<float>(v));
    return std::string(buf, r.ptr);
  }
  return cell.dump();
}

nlohmann::ordered_json Table::to_json() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& row : rows) {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    for (size_t c = 0; c < columns.size() && c < row.size(); ++c) {
      const auto& cell = row[c];
      // Keep JSON numbers as short as their text (float precision); NaN -> null.
      if (cell.is_number_float()) {
        const double v = cell.get<double>();
        obj[columns[c].name] =
            std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(std::stod(cell_text(cell, columns[c].decimals)));
      } else {
        obj[columns[c].name] = cell;
      }
    }
    out.push_back(std::move(obj));
  }
  return out;
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) {
    if (ch == '"') q += '"';
    q += ch;
  }
  return q + "\"";
}

}  // namespace

void Table::print(OutputFormat format, std::FILE* out) const {
  if (format == OutputFormat::json) {
    std::fprintf(out, "%s\n", to_json().dump(2).c_str());
    return;
  }
  std::vector<std::vector<std::string>> text(rows.size());
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < columns.size(); ++c)
      text[r].push_back(c < rows[r].size() ? cell_text(rows[r][c], columns[c].decimals) : "");
  if (format == OutputFormat::csv) {
    for (size_t c = 0; c < columns.size(); ++c) std::fprintf(out, "%s%s", c ? "," : "", csv_field(columns[c].name).c_str());
    std::fprintf(out, "\n");
    for (const auto& row : text) {
      for (size_t c = 0; c < row.size(); ++c) std::fprintf(out, "%s%s", c ? "," : "", csv_field(row[c]).c_str());
      std::fprintf(out, "\n");
    }
    return;
  }
  std::vector<size_t> width(columns.size());
  std::vector<bool> right(columns.size(), false);
  for (size_t c = 0; c < columns.size(); ++c) {
    width[c] = columns[c].name.size();
    for (size_t r = 0; r < rows.size(); ++r) {
      width[c] = std::max(width[c], text[r][c].size());
      if (c < rows[r].size() && rows[r][c].is_number()) right[c] = true;
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c) s += "  ";
      const std::string pad(width[c] - cells[c].size(), ' ');
      s += right[c] ? pad + cells[c] : cells[c] + (c + 1 < cells.size() ? pad : "");
    }
    std::fprintf(out, "%s\n", s.c_str());
  };
  std::vector<std::string> header;
  for (const auto& col : columns) header.push_back(col.name);
  line(header);
  for (const auto& row : text) line(row);
}

void parse_rec_filter(const std::string& text, mamba::recommendation::v1::AttributeFilter* out) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    throw LocalError("--filter '" + text + "': expected NAME=V1|V2 or NAME=LO..HI");
  out->set_attribute(text.substr(0, eq));
  const std::string v = text.substr(eq + 1);
  auto number = [](const std::string& s, double* x) {
    if (s.empty()) return true;
    char* end = nullptr;
    *x = std::strtod(s.c_str(), &end);
    return end != s.c_str() && *end == '\0';
  };
  const size_t dots = v.find("..");
  if (dots != std::string::npos) {
    double lo = 0, hi = 0;
    const std::string a = v.substr(0, dots), b = v.substr(dots + 2);
    if (number(a, &lo) && number(b, &hi) && !(a.empty() && b.empty())) {
      if (!a.empty()) out->set_min(lo);
      if (!b.empty()) out->set_max(hi);
      return;
    }
  }
  size_t start = 0;
  for (;;) {
    const size_t bar = v.find('|', start);
    const std::string one = v.substr(start, bar == std::string::npos ? std::string::npos : bar - start);
    if (one.empty()) throw LocalError("--filter '" + text + "': an empty value");
    out->add_any_of(one);
    if (bar == std::string::npos) break;
    start = bar + 1;
  }
}

}  // namespace mambactl
