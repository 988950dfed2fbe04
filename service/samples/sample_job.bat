@echo off
rem The simplest sample job for Windows: sleep about 1 s, then exit 0 (80 %%) or 1 (20 %%).
rem Set JOB_SCRIPT_PATH to this file to use it.
ping -n 2 127.0.0.1 > nul
set /a roll=%RANDOM% %% 100
echo sample job %JOB_NAME% rolled %roll%
if %roll% lss 80 exit /b 0
exit /b 1
