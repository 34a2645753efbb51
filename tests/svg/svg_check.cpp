// tests/svg/svg_check: checks SVG files written by the project's programs (see
// tests/svg_check.hpp): each is well-formed XML, its texts lie inside the image, and
// rsvg-convert renders it to a PNG that is not blank and has nothing on its edge.
//   svg_check <rsvg-convert or ""> <folder for the PNGs> <file.svg>...
// Exit status 0: all good; 1: a problem (printed); 77: the XML and text checks passed
// but rsvg-convert is missing, so nothing was rendered (ctest reports it as skipped).
#include <filesystem>
#include <iostream>

#include "svg_check.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: svg_check <rsvg-convert or \"\"> <png folder> <file.svg>...\n";
    return 2;
  }
  const std::string rsvg = argv[1];
  const std::filesystem::path png_dir = argv[2];
  std::filesystem::create_directories(png_dir);
  int bad = 0;
  for (int i = 3; i < argc; ++i) {
    const std::filesystem::path svg = argv[i];
    const std::string png = (png_dir / (svg.stem().string() + ".png")).string();
    const std::vector<std::string> problems = svgcheck::check_file(svg.string(), rsvg, png);
    for (const std::string& p : problems) std::cout << "PROBLEM: " << p << "\n";
    if (problems.empty()) {
      std::cout << "ok: " << svg.string() << (rsvg.empty() ? "" : " (rendered to " + png + ")")
                << "\n";
    }
    bad += problems.empty() ? 0 : 1;
  }
  if (bad > 0) return 1;
  if (rsvg.empty()) {
    std::cout << "SKIPPED rendering: rsvg-convert was not found when this build was configured "
                 "(apt-get install librsvg2-bin)\n";
    return 77;
  }
  return 0;
}
