#include "actionloop.h"

static void hello(const char *line, FILE *result) {
  char name[256];
  string_field(line, "name", name, sizeof name);
  fputs("{\"greeting\": \"Hello ", result);
  json_string(result, name[0] ? name : "world");
  fputs("\"}", result);
}

int main(void) { return action_loop(hello); }
