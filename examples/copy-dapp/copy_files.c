/* The SCONE seed's copy DApp: copy every file of /encryptedInputs to /encryptedOutputs.
 *
 * An unmodified program: it reads and writes plain files. confide's enclave runtime
 * decrypts the input volume for it (after checking the session's tag) and encrypts what
 * it leaves in the output volume (whose new tag the session records). */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define INPUTS "/encryptedInputs"
#define OUTPUTS "/encryptedOutputs"

static int copy_file(const char *from, const char *to) {
    char buffer[65536];
    size_t count;
    FILE *in = fopen(from, "rb"), *out;
    if (in == NULL) return -1;
    out = fopen(to, "wb");
    if (out == NULL) {
        fclose(in);
        return -1;
    }
    while ((count = fread(buffer, 1, sizeof buffer, in)) > 0) {
        if (fwrite(buffer, 1, count, out) != count) {
            fclose(in);
            fclose(out);
            return -1;
        }
    }
    fclose(in);
    return fclose(out);
}

int main(void) {
    DIR *directory = opendir(INPUTS);
    struct dirent *entry;
    struct stat info;
    char from[4096], to[4096];
    int copied = 0;
    if (directory == NULL) {
        perror(INPUTS);
        return 1;
    }
    while ((entry = readdir(directory)) != NULL) {
        snprintf(from, sizeof from, "%s/%s", INPUTS, entry->d_name);
        if (stat(from, &info) != 0 || !S_ISREG(info.st_mode)) continue;
        snprintf(to, sizeof to, "%s/%s", OUTPUTS, entry->d_name);
        if (copy_file(from, to) != 0) {
            perror(entry->d_name);
            closedir(directory);
            return 1;
        }
        copied++;
    }
    closedir(directory);
    printf("copied %d files\n", copied);
    return 0;
}
