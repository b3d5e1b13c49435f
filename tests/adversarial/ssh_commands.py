"""
Adversarial corpus for the SSH front end's reading of exec command lines
(issue 11, item 7): spellings of a recursive forced removal that a deny rule
C{ssh.commands = ["rm -rf *"]} must refuse, and ordinary commands it must
not.

Every entry goes through the front end itself (a L{SessionChannel} in front
of a fake target, deciding with the real policy service), so a test fails
when the exec request would reach the target.  C{DENIED} entries name the
victim as C{{X}}; the integration tests run a selection of them against a
real sshd (C{tests/integration/test_ssh_bypass.py}).  Trial collects the
test cases through C{tests/protocols/ssh/test_adversarial.py}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Connection, Identity, Source
from hoopgw.policy.loader import build_policy_set
from hoopgw.policy.service import PolicyService
from hoopgw.protocols.ssh.channels import SessionChannel, TargetChannel
from hoopgw.testing import MemoryAuditLog, memory_session_service

ALICE = Identity(issuer="test", subject="alice", groups=("dev",))
WEB1 = Connection(name="web1", kind="ssh", target="127.0.0.1:22")
DEFAULT_POLICY = Path(__file__).parents[2] / "policies" / "default.toml"

# The rule the issue names, alone, behind a blanket allow.
RM_RF_POLICY = b"""
[[rule]]
name = "everything"
effect = "allow"

[[rule]]
name = "no-rm-rf"
effect = "deny"
ssh.commands = ["rm -rf *"]
"""

X = "/srv/victim"

# Each of these removes X recursively and by force on a bash target.
DENIED = [
    # Spelling of the program and its options.
    "rm -rf {X}", "rm -fr {X}", "rm -Rf {X}", "rm -fR {X}", "rm -rfv {X}", "rm -vfr {X}",
    "rm -r -f {X}", "rm -f -r {X}", "rm -v -R -f {X}", "rm {X} -rf", "rm {X} -r -f",
    "rm --recursive --force {X}", "rm --force --recursive {X}", "rm --rec --forc {X}",
    "rm -r --force {X}", "rm --recursive -f {X}", "rm -rf -- {X}", "rm -rf {X} /srv/other",
    "'rm' -rf {X}", '"rm" -rf {X}', "r''m -rf {X}", 'r""m -rf {X}', "\\rm -rf {X}", "r\\m -rf {X}",
    "$'rm' -rf {X}", "$'\\x72\\x6d' -rf {X}", "$'\\162\\155' -rf {X}", "rm '-rf' {X}", "rm -'r'f {X}",
    "/bin/rm -rf {X}", "/usr/bin/../bin/rm -rf {X}", "//bin//rm -rf {X}", "./../../bin/rm -rf {X}",
    "~/../../bin/rm -rf {X}", "=rm -rf {X}",
    "rm\t-rf\t{X}", "rm -rf {X}\r", "rm -rf {X}\r\n", "  rm   -rf   {X}  ",
    "rm \\\n-rf {X}", "r\\\nm -rf {X}",
    # Comments (the two examples first).
    "sh -c 'rm -rf {X}' #'", "/bin/rm -fr {X} #'", "rm -rf {X} # comment", "rm -rf {X} #\"",
    "ls #'\nrm -rf {X}", "true;#'\nrm -rf {X}", "echo a#b; rm -rf {X}",
    # Separators.
    "ls\nrm -rf {X}", "ls;rm -rf {X}", "true && rm -rf {X}", "false || rm -rf {X}",
    "sleep 1 & rm -rf {X}", "echo | rm -rf {X}", "echo |& rm -rf {X}", "(rm -rf {X})",
    "{ rm -rf {X}; }", "((1)) && rm -rf {X}", "[[ -d {X} ]] && rm -rf {X}",
    # Substitutions.
    "echo $(rm -rf {X})", "echo `rm -rf {X}`", 'echo "$(rm -rf {X})"', "cat <(rm -rf {X})",
    "tee >(rm -rf {X})", "x=$(rm -rf {X})", "echo ${x:-$(rm -rf {X})}", 'echo "${x:-`rm -rf {X}`}"',
    "echo $((1 + $(rm -rf {X})))", "echo $(echo $(rm -rf {X}))", "echo $(case a in a) rm -rf {X};; esac)",
    # Shells and their scripts.
    "sh -c 'rm -rf {X}'", 'bash -c "rm -rf {X}"', "dash -ec 'ls; rm -rf {X}'", "bash -lc 'rm -rf {X}'",
    "bash --norc -c 'rm -rf {X}'", "bash --rcfile /dev/null -c 'rm -rf {X}'", "bash -o errexit -c 'rm -rf {X}'",
    "zsh -c $'rm -rf {X}'", "sh -c -- 'rm -rf {X}'", "busybox sh -c 'rm -rf {X}'",
    "bash -c 'bash -c \"rm -rf {X}\"'", "sh -c \"sh -c 'sh -c \\\"rm -rf {X}\\\"'\"",
    "bash -c 'rm \"$@\"' _ -rf {X}", "bash -c 'rm $0 {X}' -rf",
    # Here-strings and here-documents fed to a shell.
    "bash <<< 'rm -rf {X}'", "sh <<<\"rm -rf {X}\"", "bash -s <<< 'rm -rf {X}'",
    "bash <<EOF\nrm -rf {X}\nEOF", "sh <<'E'\nrm -rf {X}\nE", "sh <<-E\n\trm -rf {X}\n\tE",
    "cat <<EOF\n$(rm -rf {X})\nEOF", "cat <<EOF | sh\nrm -rf {X}\nEOF",
    # Prefix commands.
    "env rm -rf {X}", "env -i PATH=/bin rm -rf {X}", "env VAR=x rm -rf {X}", "env - rm -rf {X}",
    "/usr/bin/env -S 'rm -rf {X}'", "env -S'rm -rf {X}'", "env --split-string='rm -rf {X}'",
    "env -u HOME -C / rm -rf {X}", "env -iS 'rm -rf {X}'",
    "sudo rm -rf {X}", "sudo -u root rm -rf {X}", "sudo -uroot -- rm -rf {X}",
    "sudo -E -H -u root /usr/bin/rm -rf {X}", "sudo -s rm -rf {X}", "sudo sh -c 'cd / && rm -rf {X}'",
    "doas rm -rf {X}", "doas -u root rm -rf {X}",
    "command rm -rf {X}", "command -p rm -rf {X}", "builtin command rm -rf {X}", "exec rm -rf {X}",
    "exec -a name rm -rf {X}", "exec -c rm -rf {X}", "nohup rm -rf {X}", "time rm -rf {X}",
    "time -p rm -rf {X}", "nice rm -rf {X}", "nice -n 10 rm -rf {X}", "nice -10 rm -rf {X}",
    "nice --adjustment=5 rm -rf {X}", "ionice -c3 rm -rf {X}", "ionice -c 2 -n 7 rm -rf {X}",
    "timeout 5 rm -rf {X}", "timeout -s KILL 5 rm -rf {X}", "timeout --signal=KILL 5s rm -rf {X}",
    "timeout -k 1 5 rm -rf {X}", "timeout --preserve-status 5 rm -rf {X}", "stdbuf -oL rm -rf {X}",
    "stdbuf -o L rm -rf {X}", "setsid rm -rf {X}", "setsid -f rm -rf {X}", "chrt -o 0 rm -rf {X}",
    "taskset 1 rm -rf {X}", "taskset -c 0 rm -rf {X}", "chroot / rm -rf {X}",
    "chroot --userspec=root:root / rm -rf {X}", "flock /tmp/l rm -rf {X}", "flock -w 5 /tmp/l rm -rf {X}",
    "flock -x /tmp/l -c 'rm -rf {X}'", "flock /tmp/l --command 'rm -rf {X}'",
    "su -c 'rm -rf {X}'", "su root -c 'rm -rf {X}'", "su -lc 'rm -rf {X}' root", "su - root -c 'rm -rf {X}'",
    "su --command='rm -rf {X}'", "su -s /bin/sh -c 'rm -rf {X}' root",
    "runuser -u root -- rm -rf {X}", "runuser root -c 'rm -rf {X}'", "sg root -c 'rm -rf {X}'",
    "sg root 'rm -rf {X}'", "pkexec rm -rf {X}", "pkexec --user root rm -rf {X}", "unshare rm -rf {X}",
    "unshare -m rm -rf {X}", "nsenter -t 1 -m rm -rf {X}", "watch rm -rf {X}", "watch -n 1 'rm -rf {X}'",
    "script -qc 'rm -rf {X}' /dev/null", "script -q -c 'rm -rf {X}'", "busybox rm -rf {X}",
    "toybox rm -rf {X}", "nohup nice -n5 timeout 9 env -i /bin/rm -fr {X}", "coproc rm -rf {X}",
    "coproc X { rm -rf {X}; }", "! rm -rf {X}", "x=1 rm -rf {X}", "A=1 B=2 rm -rf {X}",
    ">/dev/null rm -rf {X}", "2>/dev/null rm -rf {X}", "&>/dev/null rm -rf {X}", "rm -rf {X} </dev/null",
    "rm -rf {X} 2>&1 | cat",
    # xargs and find -exec.
    "echo {X} | xargs rm -rf", "echo {X} | xargs -0 rm -rf", "echo {X} | xargs -I{} rm -rf {}",
    "echo {X} | xargs -n1 rm -rf", "echo {X} | xargs rm -r -f", "echo -rf {X} | xargs rm",
    "echo {X} | xargs -I % sh -c 'rm -rf %'", "find {X} -exec rm -rf {} +", "find {X} -exec rm -rf {} \\;",
    "find {X} -execdir rm -rf {} ';'", "find {X} -ok rm -rf {} \\;", "find {X} -maxdepth 0 -exec /bin/rm -fr '{}' +",
    # eval, trap, alias, functions.
    "eval rm -rf {X}", "eval 'rm -rf {X}'", 'eval "rm -rf {X}"', "eval \"$(echo rm -rf {X})\"",
    "trap 'rm -rf {X}' EXIT", "trap -- 'rm -rf {X}' EXIT", "alias x='rm -rf {X}'",
    "f() { rm -rf {X}; }; f", "function f { rm -rf {X}; }; f", "function f() { rm -rf {X}; }; f",
    "f() ( rm -rf {X} ); f",
    # Control flow.
    "if true; then rm -rf {X}; fi", "for i in 1; do rm -rf {X}; done", "while false; do :; done; rm -rf {X}",
    "until rm -rf {X}; do :; done", "case a in a) rm -rf {X};; esac", "case a in (a) rm -rf {X};; esac",
    "select x in a; do rm -rf {X}; done",
    # Brace expansion.
    "{rm,-rf,{X}}", "{rm,-rf} {X}", "r{m,} -rf {X}", "rm -{r,f} {X}", "rm -r{,f} {X}",
    # Expansions the gateway cannot evaluate: fail closed.
    "a=rm; $a -rf {X}", "a=rm; ${a} -rf {X}", 'a=rm; "$a" -rf {X}', "$(echo rm) -rf {X}",
    "`echo rm` -rf {X}", "rm${IFS}-rf${IFS}{X}", "/???/rm -rf {X}", "/bin/r? -rf {X}", "/bin/r[m] -rf {X}",
    "/bin/r* -rf {X}", "$0 -c 'rm -rf {X}'", "$SHELL -c 'rm -rf {X}'", "o=-rf; rm $o {X}", 'rm "$o" {X}',
    "rm -r$f {X}", "rm $(echo -rf) {X}", "rm `echo -rf` {X}", "cd {X}/.. && rm * ", "rm *",
    "eval \"$cmd\"", "bash -c \"$cmd\"", "sh -c \"r$x\"", "sudo $cmd", "env $cmd", "xargs -a /tmp/list rm",
    "echo {X} | xargs -I{} {} -rf", "echo 'rm -rf {X}' | sh", "echo 'rm -rf {X}' | bash -s",
    "printf 'rm -rf {X}' | busybox sh", "echo {X} | xargs sh -c",
    # A shell reading its script from what the line feeds it.
    "{ bash; } <<< 'rm -rf {X}'", "(bash) <<< 'rm -rf {X}'", "printf 'x\\nrm -rf {X}' | (read l; bash)",
    "bash < <(echo rm -rf {X})", "source <(echo rm -rf {X})", ". <(echo rm -rf {X})", "bash <(echo rm -rf {X})",
    "sh /dev/stdin <<< 'rm -rf {X}'", "exec 0< <(echo rm -rf {X}); bash", "echo 'rm -rf {X}' | at now",
    "at now <<< 'rm -rf {X}'",
    # More wrappers, and another host.
    "setpriv --reuid=0 rm -rf {X}", "prlimit --nofile=10 rm -rf {X}", "prlimit -n10 rm -rf {X}",
    "systemd-run --user rm -rf {X}", "systemd-run -p Nice=5 rm -rf {X}", "ssh localhost rm -rf {X}",
    "ssh -p 22 localhost 'rm -rf {X}'", "command exec nice rm -rf {X}", "env -- rm -rf {X}",
    "sudo -iu root rm -rf {X}", "su root --command 'rm -rf {X}'", "nice -n -5 rm -rf {X}",
    "timeout -- 5 rm -rf {X}", "bash -c 'eval \"$1\"' _ 'rm -rf {X}'", "rm -rf {X} & disown",
    # Substitutions bash runs where it evaluates quoted text as arithmetic.
    "x='a[$(rm -rf {X})]'; echo $((x))", "[[ -v 'a[$(rm -rf {X})]' ]]", "echo $(( a[$(rm -rf {X})] ))",
    "echo ${x[$(rm -rf {X})]}", "declare -a a=($(rm -rf {X}))", "cat <<EOF\nEO\\\nF\nrm -rf {X}\nEOF",
    # A "#" bash does not take for a comment: [[ =~ ]] groups, extended globs (issue 11 review, class 1).
    '[[ x =~ (#) ]]; rm -rf {X}', 'shopt -s extglob\nls @(#); rm -rf {X}', '[[ x =~ ( ]] #) ]]; rm -rf {X}',
    '[[ x == @(#) ]]; rm -rf {X}', '[[ x == +(#|a) ]]; rm -rf {X}', '[[ x =~ a(#)b ]]; rm -rf {X}',
    '[[ x =~ (a|#) ]]; rm -rf {X}', '[[ x =~ (#\n) ]]; rm -rf {X}', 'shopt -s extglob\nls !(#); rm -rf {X}',
    'shopt -s extglob\nls *(#)?(#); rm -rf {X}', 'shopt -s extglob\nf=@(#)\nrm -rf {X}',
    'shopt -s extglob\necho x@(a #)y; rm -rf {X}', 'echo ${x#y}; rm -rf {X}', 'echo $#; rm -rf {X}',
    'echo $((2#1)); rm -rf {X}', '(( x = 16#ff )); rm -rf {X}', '[[ $x == *#* ]]; rm -rf {X}',
    'case x in *#*) :;; esac; rm -rf {X}', 'time -p [[ x =~ ( ]] #) ]]; rm -rf {X}',
    'echo $( [[ x =~ (#) ]]; rm -rf {X} )',
    # "<<" in arithmetic, [[ ]] and extended globs: a shift, not a here-document (class 2).
    '((x<<E))\nrm -rf {X}\nE', 'echo $[1<<E]\nrm -rf {X}\nE]', 'for ((i=0;i<<E;i++)); do :; done\nrm -rf {X}\nE',
    'echo $((1<<E))\nrm -rf {X}\nE', '((x<<-E))\nrm -rf {X}\nE', "((x<<'E'))\nrm -rf {X}\nE",
    '[[ x =~ (<<E) ]]\nrm -rf {X}\nE', 'shopt -s extglob\nls @(<<E)\nrm -rf {X}\nE',
    "echo $((1<<'E'\n$(rm -rf {X})\nE))", '(( x[1<<E] ))\nrm -rf {X}\nE', 'time ((x<<E))\nrm -rf {X}\nE',
    '! ((x<<E))\nrm -rf {X}\nE', 'if ((x<<E)); then :; fi\nrm -rf {X}\nE',
    'while ((0<<E)); do :; done\nrm -rf {X}\nE', 'echo $(( (1<<E) ))\nrm -rf {X}\nE', 'x=$[1<<E]\nrm -rf {X}\nE]',
    'echo "$[1<<E]\nrm -rf {X}\nE]"', 'echo $( ((x<<E))\nrm -rf {X}\nE\n)', 'f() ((x<<E))\nrm -rf {X}\nE',
    # Abbreviated GNU long options, "--opt=value" (class 3).
    'nice --adj 5 rm -rf {X}', 'nice --adjustment 5 rm -rf {X}', 'nice --a=5 rm -rf {X}', 'env --uns HOME rm -rf {X}',
    'env --unset=HOME rm -rf {X}', 'env --ch / rm -rf {X}', 'env --chdir / rm -rf {X}', "env --split 'rm -rf {X}'",
    "env --split-s='rm -rf {X}'", 'env --default-signal rm -rf {X}', 'env --ig rm -rf {X}', 'env --de rm -rf {X}',
    'timeout --sig KILL 5 rm -rf {X}', 'timeout --kill 1 5 rm -rf {X}', 'timeout --signal KILL 5 rm -rf {X}',
    'timeout --kill-a 1 5 rm -rf {X}', 'timeout --s=KILL 5 rm -rf {X}', 'stdbuf --out L rm -rf {X}',
    'stdbuf --e L rm -rf {X}', 'stdbuf --in 0 rm -rf {X}', 'unshare --setu 0 rm -rf {X}',
    'unshare --propag private rm -rf {X}', 'unshare --wd /tmp rm -rf {X}', 'setpriv --reu 0 rm -rf {X}',
    'setpriv --reg 0 rm -rf {X}', 'setpriv --gr 0 rm -rf {X}', 'setpriv --in 0 rm -rf {X}',
    'flock --time 5 /tmp/l rm -rf {X}', 'flock --wa 5 /tmp/l rm -rf {X}', 'flock --conf 1 /tmp/l rm -rf {X}',
    'echo {X} | xargs --max-a 1 rm -rf', "echo {X} | xargs --deli ' ' rm -rf", 'echo {X} | xargs --max-p 1 rm -rf',
    'echo {X} | xargs --proc v rm -rf', 'echo {X} | xargs --arg-f /dev/stdin rm -rf', 'time --outp /tmp/o rm -rf {X}',
    'time --format x rm -rf {X}', 'command time --outp /tmp/o rm -rf {X}', "su --comm 'rm -rf {X}'",
    "su --comma 'rm -rf {X}'", "su --session-c 'rm -rf {X}'", "su --sh /bin/sh -c 'rm -rf {X}'",
    "script -q --comm 'rm -rf {X}' /dev/null", "script --comm 'rm -rf {X}' -q /dev/null",
    "script -q /dev/null --comm 'rm -rf {X}'", 'sudo --use root rm -rf {X}', 'sudo --user=root rm -rf {X}',
    'sudo --preserve-env rm -rf {X}', 'sudo --preserve-env=HOME rm -rf {X}', 'sudo --ch / rm -rf {X}',
    'sudo --gr root rm -rf {X}', 'pkexec --u root rm -rf {X}', 'pkexec --user root rm -rf {X}',
    'systemd-run --uni x rm -rf {X}', 'systemd-run --unit=x rm -rf {X}', 'systemd-run --desc x rm -rf {X}',
    'systemd-run -p {X}=1 --uid 0 rm -rf {X}', 'ionice --cl 3 rm -rf {X}', 'chroot --us root / rm -rf {X}',
    'setsid --f rm -rf {X}', 'nsenter --ta 1 -m rm -rf {X}', 'prlimit --nof=10 rm -rf {X}',
    'watch --int 1 rm -rf {X}', "watch --interval=1 'rm -rf {X}'", 'nohup --he rm -rf {X}',
    # Attached, optional and unknown short options (class 4).
    'nsenter -m/proc/1/ns/mnt rm -rf {X}', 'nsenter -u/proc/1/ns/uts rm -rf {X}', 'nsenter -t1 -m rm -rf {X}',
    'nsenter -r/ rm -rf {X}', 'nsenter -w/tmp rm -rf {X}', 'unshare -R/ rm -rf {X}', 'unshare -w/tmp rm -rf {X}',
    'unshare -mrf rm -rf {X}', 'prlimit -n10 rm -rf {X}', 'prlimit -c rm -rf {X}', 'prlimit -n rm -rf {X}',
    'echo {X} | xargs -i rm -rf {}', 'echo {X} | xargs -l1 rm -rf', 'echo {X} | xargs -eEOF rm -rf',
    'echo {X} | xargs -I% rm -rf %', 'echo {X} | xargs -rn1 rm -rf', 'echo {X} | xargs -0r rm -rf',
    'ionice -c3 -n7 rm -rf {X}', 'ionice -tc3 rm -rf {X}', 'timeout -sKILL 5 rm -rf {X}', 'timeout -vk1 5 rm -rf {X}',
    'stdbuf -oL -eL rm -rf {X}', 'stdbuf -i0 rm -rf {X}', 'env -uHOME rm -rf {X}', 'env -C/ rm -rf {X}',
    'env -iC/ rm -rf {X}', 'env -0 rm -rf {X}', 'nice -n5 rm -rf {X}', 'nice -5 rm -rf {X}', 'nice --5 rm -rf {X}',
    'nice -+5 rm -rf {X}', 'nice -n -5 rm -rf {X}', "script -t/tmp/t -c 'rm -rf {X}' /dev/null",
    "script -qec 'rm -rf {X}' /dev/null", 'watch -d rm -rf {X}', "watch -n1 -d 'rm -rf {X}'", 'setsid -fw rm -rf {X}',
    'setsid -w rm -rf {X}', 'flock -w5 /tmp/l rm -rf {X}', 'flock -xw 5 /tmp/l rm -rf {X}',
    'flock -nE 3 /tmp/l rm -rf {X}', 'chrt -r 1 rm -rf {X}', 'chrt -o 0 rm -rf {X}', 'chrt -bo 0 rm -rf {X}',
    'taskset -c 0 rm -rf {X}', 'taskset 0x1 rm -rf {X}', 'taskset -ac 0 rm -rf {X}', 'setpriv -d rm -rf {X}',
    'sudo -Eu root rm -rf {X}', 'sudo -hlocalhost rm -rf {X}', 'sudo -g0 rm -rf {X}', 'doas -u root rm -rf {X}',
    'doas -n rm -rf {X}', 'exec -cl rm -rf {X}', 'exec -a x rm -rf {X}', 'command -p rm -rf {X}',
    "su -s/bin/sh -c 'rm -rf {X}'", "su -mc 'rm -rf {X}'", 'runuser -u root -- rm -rf {X}',
    "su root -- -c 'rm -rf {X}'", "su - root -- -c 'rm -rf {X}'", 'nice -q rm -rf {X}', 'timeout -x 5 rm -rf {X}',
    # Aliases, hash -p, PATH, BASH_ENV, PS4 and builtins that run code (class 5).
    "shopt -s expand_aliases\nalias r=''\nr rm -rf {X}", 'shopt -s expand_aliases\nalias r=nice\nr rm -rf {X}',
    "shopt -s expand_aliases\nalias r='r''m'\nr -rf {X}",
    "shopt -s expand_aliases\nalias r=command r2=''\nr r2 rm -rf {X}",
    'shopt -s expand_aliases; BASH_ALIASES[r]=rm\nr -rf {X}',
    'shopt -s expand_aliases; BASH_ALIASES+=([r]=rm)\nr -rf {X}', 'hash -p /bin/rm ls; ls -rf {X}',
    'hash -rp /bin/rm ls; ls -rf {X}', 'BASH_CMDS[ls]=/bin/rm; ls -rf {X}', 'BASH_ENV=<(echo rm -rf {X}) bash -c :',
    'env BASH_ENV=<(echo rm -rf {X}) bash -c :', 'export BASH_ENV=<(echo rm -rf {X}); bash -c :',
    'declare -x BASH_ENV=<(echo rm -rf {X}); bash -c :', "env 'BASH_FUNC_ls%%=() { rm -rf {X}; }' bash -c ls",
    "PS4='$(rm -rf {X})'; set -x; :", "PS4=$'\\x24(rm -rf {X})'; set -x; :", "PS4=$'\\x24(rm -rf {X})' bash -xc :",
    "read PS4 <<< '$(rm -rf {X})'; set -x; :", "declare -n p=PS4; p=$'\\x24(rm -rf {X})'; set -x; :",
    'x="\\$(rm -rf {X})"; echo ${x@P}', 'x=$\'\\x24(rm -rf {X})\'; echo "${x@P}"', 'jobs -x rm -rf {X}',
    'compgen -C "rm -rf {X}" x', 'compgen -W "\\$(rm -rf {X})" x', "printf 'a\\n' | mapfile -C 'rm -rf {X}' -c 1",
    "printf 'a\\n' | readarray -C'rm -rf {X}' -c1", "set -o history\necho hi\nhistory -s 'rm -rf {X}'\nfc -s rm",
    'command_not_found_handle() { rm -rf {X}; }; zz',
    'mkdir -p /tmp/p; ln -sf /bin/rm /tmp/p/zz; PATH=/tmp/p:$PATH zz -rf {X}', 'PATH=/tmp/p:$PATH; zz -rf {X}',
    'export PATH=/tmp/p:$PATH; zz -rf {X}',
    # Arithmetic evaluating what a variable holds; quoted option letters (class 6).
    'x="a[\\$(rm -rf {X})]"; echo $((x))', "x='a[$''(rm -rf {X})]'; echo $((x))",
    "x=$'a[\\x24(rm -rf {X})]'; echo $((x))", 'x="a[\\`rm -rf {X}\\`]"; [[ x -eq 1 ]]',
    "x=$'a[\\x24(rm -rf {X})]'; (( x ))", "x=$'a[\\x24(rm -rf {X})]'; let x", "x=$'a[\\x24(rm -rf {X})]'; let y=x",
    "x=$'a[\\x24(rm -rf {X})]'; echo $[x]", "x=$'a[\\x24(rm -rf {X})]'; [[ $x -eq 1 ]]",
    "x=$'a[\\x24(rm -rf {X})]'; [[ 1 -lt x ]]", "x=$'a[\\x24(rm -rf {X})]'; y=(1); echo ${y[x]}",
    "x=$'a[\\x24(rm -rf {X})]'; y=abc; echo ${y:x}", "x=$'a[\\x24(rm -rf {X})]'; y=abc; echo ${y:1:x}",
    "x=$'a[\\x24(rm -rf {X})]'; a[x]=1", "x=$'a[\\x24(rm -rf {X})]'; declare -i y=x",
    "declare -i y; x=$'a[\\x24(rm -rf {X})]'; y=x", "x=$'a[\\x24(rm -rf {X})]'; echo ${!x}",
    'x=$\'a[\\x24(rm -rf {X})]\'; read "$x" <<< 1', "read x <<< $'a[\\x24(rm -rf {X})]'; echo $((x))",
    "x=1; read x <<< $'a[\\x24(rm -rf {X})]'; echo $((x))", "x=1; printf -v x 'a[%s(rm -rf {X})]' '$'; echo $((x))",
    "x=1; mapfile x <<< $'a[\\x24(rm -rf {X})]'; echo $((x))", 'echo $((LC_X))',
    "echo $(( $(printf 'a[\\x24(rm -rf {X})]') ))", "echo $(( `printf 'a[\\x24(rm -rf {X})]'` ))",
    ": $'a[\\x24(rm -rf {X})]'; echo $(($_))", "set -- $'a[\\x24(rm -rf {X})]'; echo $(($1))",
    'x=1; declare -n r=x; r="a[\\$(rm -rf {X})]"; echo $((x))',
    "x=1; for x in $'a[\\x24(rm -rf {X})]'; do echo $((x)); done",
    'x=1; eval \'x=$\'"\'"\'a[\\x24(rm -rf {X})]\'"\'"; echo $((x))',
    'x=1; eval "declare \\$\'\\\\x78=a[\\\\x24(rm -rf {X})]\'"; echo $((x))',
    "unset x; : ${x:=$'a[\\x24(rm -rf {X})]'}; echo $((x))",
    "REPLY=1; read <<< $'a[\\x24(rm -rf {X})]'; echo $((REPLY))", 'x=$\'a[\\x24(rm -rf {X})]\'; test -v "$x"',
    "x=$'a[\\x24(rm -rf {X})]'; [[ -v $x ]]", 'x=$\'a[\\x24(rm -rf {X})]\'; printf -v "$x" 1',
    "test -v 'a[$(rm -rf {X})]'", "x=$'a[\\x24(rm -rf {X})]'; a=([x]=1)", "a=([$'\\x24(rm -rf {X})']=1)",
    "x=$'a[\\x24(rm -rf {X})]'; for ((i=x;0;)); do :; done", "x=$'a[\\x24(rm -rf {X})]'; case $((x)) in *) ;; esac",
    'x=$\'a[\\x24(rm -rf {X})]\'; echo "$((x))"', "x=$'a[\\x24(rm -rf {X})]'; cat <<E\n$((x))\nE",
    'echo "${x:-\'$(rm -rf {X})\'}"', 'echo "${x:-$\'\\x24(rm -rf {X})\'}"', "cat <<E\n${x:-'$(rm -rf {X})'}\nE",
    "cat <<E\n${x:-'`rm -rf {X}`'}\nE", 'g=f; rm -r"$g" {X}', 'o=(rf {X}); rm -"${o[@]}"', 'g=f; rm "-r${g}" {X}',
    "x=$'a[\\x24(rm -rf {X})]'; x+=''; echo $((x))", "i=$'a[\\x24(rm -rf {X})]'; for ((; i < 1; )); do :; done",
    "x=$'a[\\x24(rm -rf {X})]' bash -c 'echo $((x))'", "bash -c 'echo $(($1))' _ $'a[\\x24(rm -rf {X})]'",
    "x=1; IFS= read -r x <<< $'a[\\x24(rm -rf {X})]'; echo $((x))", 'x=1; coproc x { :; }; echo $((x))',
    # Found by random lines run through bash 5.2: line continuations bash removes first, subscripts and array
    # assignments bash reads by context, bash 5.3's ${ cmd; }.
    "echo << Ea\\\n]\n: $(rm -rf {X})\nEa]", "cat <<\\\n< x\nrm -rf {X}", "true &\\\n& rm -rf {X}",
    "$\\\n'\\x72m' -rf {X}", "x=$'a[\\x24(rm -rf {X})]'; echo ${\\\n!x}", "cat <<\\\nE\n$(rm -rf {X})\nE",
    "echo $\\\n(rm -rf {X})", "ls # c \\\nrm -rf {X}", "x[a=(#}=1 `rm -rf {X}`]\nx=", "x[ <<E]=1\nrm -rf {X}\nE",
    "echo x[a; rm -rf {X}; ]", "a=(a=( =~ \nrm -rf {X}\n)),exec ", "a=(@(\nrm -rf {X}\n))",
    "a=(x (\nrm -rf {X}\n)", "a=( x>y\nrm -rf {X}\n)", "echo ${ rm -rf {X}; }", "echo ${| rm -rf {X}; }",
    # Values bash expands twice: the target of >& (when not a descriptor), an array value given to declare.
    "@P} ]]2>&1$'$(rm -rf {X})let printf -v ']=1 ", "true >&$'$(rm -rf {X})'", "true >&\"\\$(rm -rf {X})\"",
    "x='$(rm -rf {X})'; true >& \"$x\"", "true 1>&'`rm -rf {X}`'", "v='$(rm -rf {X})'; declare -a \"a=($v)\"",
    "a=(); v='($(rm -rf {X}))'; declare a=$v", "declare -A m; v='([k]=$(rm -rf {X}))'; declare m=$v",
    "x=$'\\x24(rm -rf {X})'; true >& \"$x\"", "v=$'\\x24(rm -rf {X})'; declare -a \"a=($v)\"",
    "a=(); v=$'(\\x24(rm -rf {X}))'; declare a=$v",
    # Variables whose value bash evaluates as arithmetic when it is assigned.
    "OPTIND=$'a[\\x24(rm -rf {X})]'", "read OPTIND <<< $'a[\\x24(rm -rf {X})]'",
    "printf -v RANDOM %s $'a[\\x24(rm -rf {X})]'", "x=$'a[\\x24(rm -rf {X})]'; OPTIND+=$x",
    "declare HISTCMD=$'a[\\x24(rm -rf {X})]'", "SRANDOM=\"a[\\$(rm -rf {X})]\"",
    # A shell in a nested script reads the standard input the line feeds to the command running that script.
    "bash -c <<\\\nsudo bash -c x\nrm -rf {X}", "bash -c bash <<E\nrm -rf {X}\nE", "sh -c 'sh' <<< 'rm -rf {X}'",
    "echo 'rm -rf {X}' | sh -c 'eval sh'", "cat <<E | bash -c 'bash -s'\nrm -rf {X}\nE",
    # Not valid shell syntax, or not readable: fail closed.
    "rm -rf {X}; echo 'oops", "rm -rf {X}\necho \"oops", "echo $(rm -rf {X}", "ls `", "echo ${x",
    "ls\x00; rm -rf {X}",
    # A program that starts a shell when given no command reads its script from the standard input the line
    # feeds it, and so does a shell in >(...), fed by the command the substitution is written to.
    "su root <<< 'rm -rf {X}'", "su <<< 'rm -rf {X}'", "su - <<< 'rm -rf {X}'", "su -l root <<< 'rm -rf {X}'",
    "runuser root <<< 'rm -rf {X}'", "echo 'rm -rf {X}' | su", "sudo -s <<< 'rm -rf {X}'",
    "sudo -i <<< 'rm -rf {X}'", "sudo -u root --shell <<< 'rm -rf {X}'", "echo 'rm -rf {X}' | sudo -s",
    "doas -s <<< 'rm -rf {X}'", "pkexec <<< 'rm -rf {X}'", "chroot / <<< 'rm -rf {X}'",
    "echo 'rm -rf {X}' | chroot /", "unshare <<< 'rm -rf {X}'", "unshare -m <<EOF\nrm -rf {X}\nEOF",
    "nsenter -t 1 -a <<< 'rm -rf {X}'", "echo 'rm -rf {X}' | nsenter -t 1 -m", "sg root <<< 'rm -rf {X}'",
    "script <<< 'rm -rf {X}'", "echo 'rm -rf {X}' | script -q /dev/null", "ssh localhost <<< 'rm -rf {X}'",
    "echo 'rm -rf {X}' | ssh -T localhost", "echo 'rm -rf {X}' > >(bash)", "echo 'rm -rf {X}' > >(sh)",
    "exec > >(bash); echo rm -rf {X}", "echo 'rm -rf {X}' | tee >(sh)", "cat <<< 'rm -rf {X}' > >(sudo -s)",
    "newgrp <<< 'rm -rf {X}'", "newgrp root <<< 'rm -rf {X}'",
    # An interactive bash runs its --rcfile (--init-file) first.
    "bash --rcfile <(echo 'rm -rf {X}') -i < /dev/null", "bash --init-file <(echo 'rm -rf {X}') -i </dev/null",
    "bash --rcfile <(echo 'rm -rf {X}') -ic true", "bash --rcfile /dev/stdin -i <<< 'rm -rf {X}'",
    "bash --rcfile /dev/fd/3 -i 3<<< 'rm -rf {X}' </dev/null",
]

# Ordinary work a rule on "rm -rf *" must leave alone.
ALLOWED = [
    "ls -la", "ls -la /tmp", "cat file", "cat /etc/hostname", "git status", "git log --oneline | head -5",
    "uptime", "df -h; free -m", "rm /tmp/x", "rm -f /tmp/x", "rm -r /tmp/dir", "rm -f /tmp/*.log",
    "rm -f -- \"$f\"", "grep -rf patterns /x", "echo 'rm -rf /x'", 'echo "rm -rf /x"', "echo $HOME",
    "ls -la $HOME", "cat /etc/hostname | wc -l", "find /tmp -name '*.log' -print", "sudo ls /root",
    "env LANG=C ls", "nice -n 5 ls", "timeout 5 ls", "sh -c 'ls -la'", 'bash -c "echo hi"',
    "tar czf /tmp/x.tgz /etc", "echo hi # a comment 'with a quote", "printf '%s\\n' a b",
    "for f in a b; do echo $f; done", "cd /tmp && ls", "x=1; echo $x", "systemctl status nginx",
    "echo {a,b}", "ls /srv/{a,b}", "[ -f /etc/passwd ] && echo yes", "cat <<EOF\nhello $USER\nEOF",
    "bash <<< 'echo hi'", "find /tmp -type f -exec ls -l {} +", "echo /tmp | xargs ls",
    "sudo -u deploy git -C /srv/app pull", "journalctl -u nginx | grep -i reboot", "python3 -c 'print(1)'",
    "echo 'use $(cmd) here'", "awk '{print $(NF)}' /etc/passwd", "ssh backup uptime", "last reboot",
    # Read as bash reads them: arithmetic on numbers the line sets, [[ ]], extended globs, wrappers' options.
    "for i in 1 2 3; do echo $i; done", "for ((i=0;i<3;i++)); do echo $i; done", "echo $((1+2))",
    "x=5; echo $((x*2))", "i=0; while [ $i -lt 3 ]; do i=$((i+1)); done", "echo $((RANDOM % 10))",
    "[[ $# -gt 0 ]] && echo yes", "[[ $x =~ ^[0-9]+$ ]] && echo num", "[[ $x == @(a|b)* ]] && echo ab",
    "arr=(a b c); echo ${arr[1]}", "echo ${HOME:0:5}", "a[0]=1; echo $((a[0]+1))", "echo $[1+1]",
    "shopt -s extglob; ls !(*.log)", "echo ${x#y} # a comment", "ionice -c3 nice -n19 tar czf /tmp/b.tgz /srv",
    "timeout -k 5 10 ls", "env -u HOME ls", "flock -n /tmp/lock ls", "nsenter -t 1 -m -u ls",
    "sudo -iu deploy bash -c 'cd /srv && ls'", "nice --adj 5 ls", "stdbuf --out L tail -n 5 /var/log/syslog",
    "prlimit --nofile=1024 ls", "sleep 1 & wait $!", "export LANG=C; ls", "read -r line < /etc/hostname",
    "trap 'echo bye' EXIT", "diff <(ls a) <(ls b)", "rm -f -- ./*.log",
]


def spelled(command: str) -> str:
    return command.replace("{X}", X)


class FakeConnection:
    """Records what a channel sends; request replies are Deferreds that never fire."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(("data", data))

    def sendExtendedData(self, channel: Any, kind: int, data: bytes) -> None:
        self.sent.append(("ext", kind, data))

    def sendEOF(self, channel: Any) -> None:
        self.sent.append(("eof",))

    def sendClose(self, channel: Any) -> None:
        if not channel.localClosed:
            channel.localClosed = True
            self.sent.append(("close",))

    def sendRequest(self, channel: Any, request: bytes, data: bytes, wantReply: bool = False) -> Deferred | None:
        self.sent.append(("request", request, data))
        return Deferred() if wantReply else None


class _Host:
    def __init__(self, session: Any, target: Any) -> None:
        self.session = session
        self.target = target
        self.filters: dict = {}

    def channel_closed(self, channel: Any) -> None:
        pass


class _CorpusCase:
    """
    Runs each command through a fresh front-end channel deciding with
    C{policy_bytes} (a mixin, so that trial does not run it on its own).
    """

    policy_bytes: bytes = b""
    successResultOf: Any
    assertEqual: Any

    def setUp(self) -> None:
        self.policy = PolicyService(build_policy_set([("corpus.toml", self.policy_bytes)]))

    def reaches_target(self, command: str) -> bool:
        audit = MemoryAuditLog()
        sessions = memory_session_service(connections=(WEB1,), audit=audit, policy=self.policy)
        session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
        target_conn = FakeConnection()
        host = _Host(session, target_conn)
        target = TargetChannel(b"session", conn=target_conn, remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        channel = SessionChannel(host, target, conn=FakeConnection(), remoteWindow=1 << 20, remoteMaxPacket=1 << 15)
        channel.want_reply = True
        channel.requestReceived(b"exec", NS(command.encode("utf-8")))
        return any(entry[:2] == ("request", b"exec") for entry in target_conn.sent)

    def test_denied(self) -> None:
        """No spelling of the removal reaches the target."""
        reached = [spelled(c) for c in DENIED if self.reaches_target(spelled(c))]
        self.assertEqual(reached, [], f"{len(reached)} of {len(DENIED)} reached the target")

    def test_allowed(self) -> None:
        """Ordinary commands still run."""
        refused = [c for c in ALLOWED if not self.reaches_target(c)]
        self.assertEqual(refused, [])


class RmRfRuleCorpusTests(_CorpusCase, SynchronousTestCase):
    """A policy whose only guardrail is C{ssh.commands = ["rm -rf *"]}."""

    policy_bytes = RM_RF_POLICY


class DefaultPolicyCorpusTests(_CorpusCase, SynchronousTestCase):
    """The shipped policy (its C{no-rm-rf} and C{no-power-control} rules)."""

    policy_bytes = DEFAULT_POLICY.read_bytes()
