/*
 * The course's harness for C submissions: an OpenWhisk ActionLoop executable (one JSON line in on
 * stdin per activation, the result as one JSON line on fd 3) that runs each test in a child
 * process, so that a crash or a hang in the submission fails that test only.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

struct test { const char *name; int (*run)(void); };
extern const struct test TESTS[];
extern const int TEST_COUNT;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(void) {
  FILE *results = fdopen(3, "w");
  char line[1 << 16];
  if (!results) return 1;
  if (getenv("__OW_WAIT_FOR_ACK")) {
    fputs("{\"ok\": true}\n", results);
    fflush(results);
  }
  while (fgets(line, sizeof line, stdin)) {
    int passed = 0;
    fputs("{\"tests\": [", results);
    for (int i = 0; i < TEST_COUNT; i++) {
      double started = now_ms();
      fflush(stdout);
      pid_t child = fork();
      if (child == 0) {
        alarm(5);
        _exit(TESTS[i].run() ? 0 : 1);
      }
      int status = 0;
      const char *message = "";
      if (child < 0) message = "the test could not be started";
      else if (waitpid(child, &status, 0) < 0) message = "the test was lost";
      else if (WIFSIGNALED(status)) message = WTERMSIG(status) == SIGALRM ? "timed out after 5 s" : strsignal(WTERMSIG(status));
      else if (WEXITSTATUS(status) != 0) message = "AssertionError: wrong answer";
      int ok = message[0] == '\0';
      passed += ok;
      fprintf(results, "%s{\"name\": \"%s\", \"passed\": %s, \"message\": \"%s\", \"ms\": %.3f}", i ? ", " : "", TESTS[i].name,
              ok ? "true" : "false", message, now_ms() - started);
    }
    fprintf(results, "], \"passed\": %d, \"total\": %d}\n", passed, TEST_COUNT);
    fflush(results);
    fflush(stdout);
    fputs("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n", stdout);
    fflush(stdout);
    fputs("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n", stderr);
    fflush(stderr);
  }
  return 0;
}
