// One function per `smoothread` subcommand; each returns the process exit code.
#pragma once

namespace sr::cli {
int cmd_train(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_gen(int argc, char** argv);
int cmd_score(int argc, char** argv);
int cmd_read(int argc, char** argv);
int cmd_chunk(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_longbench(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_bench(int argc, char** argv);
}  // namespace sr::cli
